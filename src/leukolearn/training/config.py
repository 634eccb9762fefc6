"""The settings of one training, as a run stores them (config.json, model files).

Kept apart from the training loop so that reading a default (the CLI's --help, a stored
config) does not load torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from leukolearn.errors import LeukolearnError


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "rmsprop"  # "rmsprop" | "adam"
    lr: float = 1e-3
    batch_size: int = 5
    max_epochs: int = 500
    patience: int = 50
    augment: bool = True
    init: str = "keras"  # "keras" (Glorot, zero bias; the paper) | "torch"
    oversample_to: int | None = None  # multiclass: top every class up to this many images
    device: str = "cpu"  # "cpu" | "cuda" | "auto"
    # A tiny ReLU network can die early (constant output; ~1 in 5 paper trainings here).
    # The paper's protocol keeps such a run; restarts > 0 re-initialises it instead.
    restarts: int = 0
    # Beyond the paper (0: off, as in its presets; training.augment says what they do):
    # zoom in [1/(1+s), 1+s], and colour changes of this strength, with the augmentation.
    scale_jitter: float = 0.0
    colour_jitter: float = 0.0
    # A head start: the weights of another model file (its conv blocks, or all of it where
    # the classes match) before training; `freeze_features` keeps the conv blocks fixed.
    init_from: str | None = None
    freeze_features: bool = False
    # Stain normalisation (data.stain): "reinhard", fitted on the training cells and stored
    # with the model, which then applies it to every image it is given. None: off (the paper).
    stain_norm: str | None = None
    # Beyond the paper (1: its CNN): every conv block with `width` times its filters
    # (`model.cnn.widened_filters`); what `sweep --model wide-cnn` trains.
    width: int = 1
    # Beyond the paper (0: its plain cross-entropy): the training loss's targets moved this
    # far towards uniform (torch's label_smoothing); the validation loss stays plain.
    label_smoothing: float = 0.0
    # Beyond the paper ("constant": its fixed rate): "plateau" halves the learning rate on
    # a validation plateau (training.optim).
    lr_schedule: str = "constant"
    # Beyond the paper (False: its pixel / 255): the inputs standardised per channel by the
    # training images' statistics while training, folded into the first conv after it
    # (training.input_norm), so the model file is an ordinary one.
    input_norm: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("rmsprop", "adam"):
            raise LeukolearnError(f"unknown optimizer {self.optimizer!r}; use rmsprop or adam")
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise LeukolearnError(f"{name.replace('_', '-')} must be at least 1")
        if not self.lr > 0:
            raise LeukolearnError("learning rate must be positive")
        if self.restarts < 0:
            raise LeukolearnError(f"restarts must be 0 or more, got {self.restarts}")
        if not 0 <= self.scale_jitter <= 1:
            raise LeukolearnError(f"scale jitter must be in [0, 1], got {self.scale_jitter}")
        if not 0 <= self.colour_jitter <= 0.5:
            raise LeukolearnError(f"colour jitter must be in [0, 0.5], got {self.colour_jitter}")
        if self.stain_norm not in (None, "reinhard"):
            raise LeukolearnError(f"unknown stain normalisation {self.stain_norm!r}; use reinhard")
        if not 0 <= self.label_smoothing < 0.5:
            raise LeukolearnError(f"label smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise LeukolearnError(f"unknown learning-rate schedule {self.lr_schedule!r}; "
                                  f"use {' or '.join(LR_SCHEDULES)}")
        if not 1 <= self.width <= 16:
            raise LeukolearnError(f"width must be from 1 (the paper's CNN) to 16, got {self.width}")
        if self.input_norm and self.init_from:
            raise LeukolearnError("--input-norm cannot start from a model (--init-from): its "
                                  "weights are for inputs that were not standardised")
        if self.freeze_features and not self.init_from:
            raise LeukolearnError("freezing the conv blocks needs a model to start from (--init-from)")

    @classmethod
    def binary(cls, **overrides) -> "TrainConfig":
        return cls(**{"optimizer": "rmsprop", "lr": 1e-3, **overrides})

    @classmethod
    def multiclass(cls, **overrides) -> "TrainConfig":
        return cls(**{"optimizer": "adam", "lr": 1e-4, "oversample_to": 150, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        # "threads" (torch's intra-op threads) was a setting until every CPU training ran
        # with a fixed count (`training.threads.TRAINING_THREADS`); configs and model files
        # stored before still hold it, and it no longer changes anything.
        return cls(**{k: v for k, v in data.items() if k not in _RETIRED})


def not_batchable(config: TrainConfig) -> str | None:
    """Why K networks of `config` cannot train at once (`batched.train_many`), or None.
    One list for the sweep's up-front check and for train_many itself."""
    if config.stain_norm:  # each job would need its own normalised copy of its cells
        return "does not normalise stains"
    if config.lr_schedule != "constant":  # its optimiser is written out at one rate
        return "keeps the learning rate constant"
    if config.input_norm:  # its stacked first convolutions would each need their own fold
        return "does not standardise inputs"
    return None


LR_SCHEDULES = ("constant", "plateau")
_RETIRED = ("threads",)  # stored by older versions, ignored when read back
