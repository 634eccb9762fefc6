"""Named sweeps: the paper's three experiments and a quick look.

A preset is a `SweepConfig`: protocol name + protocol options + training settings + the
metric. The config is what a run directory stores (config.json) and compares on resume,
so everything that changes a result belongs here and nothing else does (the number of
worker processes, for one, does not).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from leukolearn.analysis.metrics import METRICS
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.methods import DEFAULT_MODEL, check_model
from leukolearn.experiments.protocol import PROTOCOLS, ProtocolOptions, default_options
from leukolearn.training.config import TrainConfig

if TYPE_CHECKING:
    from leukolearn.data.cellimages import CellImages


@dataclass(frozen=True)
class SweepConfig:
    protocol: str  # "all" | "aml" | "multiclass" (see leukolearn.experiments.protocol)
    options: ProtocolOptions
    train: TrainConfig
    metric: str = "auc"  # "auc" (binary) | "weighted_f1" (multiclass)
    # What is trained (experiments.methods.MODELS): the paper's CNN, or a baseline.
    model: str = DEFAULT_MODEL

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise LeukolearnError(f"unknown protocol {self.protocol!r}; choose from {sorted(PROTOCOLS)}")
        if self.metric not in METRICS:
            raise LeukolearnError(f"unknown metric {self.metric!r}; choose from {METRICS}")
        kind = check_model(self.model)
        if kind.feature_set is not None and self.train.init_from:
            raise LeukolearnError(f"--init-from starts a network from another model's weights; "
                                  f"the baseline {self.model!r} has none")
        if kind.feature_set is None and self.train.width != kind.width:
            raise LeukolearnError(f"model {self.model!r} has {kind.width}x the paper's filters, "
                                  f"the training settings {self.train.width}x")

    @property
    def multiclass(self) -> bool:
        """Whether the sweep keeps every class (scored by weighted F1) rather than a binary
        blast / other task (ROC-AUC): the metric says which task it is."""
        return self.metric == "weighted_f1"

    def with_options(self, **changes: Any) -> "SweepConfig":
        """A copy with protocol options changed (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, options=replace(self.options, **changes)) if changes else self

    def with_train(self, **changes: Any) -> "SweepConfig":
        """A copy with training settings changed (None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, train=replace(self.train, **changes)) if changes else self

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "options": self.options.to_dict(),
                "train": self.train.to_dict(), "metric": self.metric, "model": self.model}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepConfig":
        # "model": runs made before baselines existed trained the paper's CNN.
        return cls(protocol=d["protocol"], options=ProtocolOptions.from_dict(d["options"]),
                   train=TrainConfig.from_dict(d["train"]), metric=d["metric"],
                   model=d.get("model", DEFAULT_MODEL))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "SweepConfig":
        return cls.from_dict(json.loads(text))


def _paper_all_binary() -> SweepConfig:
    # ALL-IDB2 has 247 images once our duplicate finder removed 13 (the paper removed 10
    # and kept 250), so a fold's training pool holds 197-198 images: size 200 is capped
    # to the pool with a warning instead of failing.
    options = replace(default_options("all"), cap_sizes=True)
    return SweepConfig("all", options, TrainConfig.binary(), "auc")


def _paper_aml_binary() -> SweepConfig:
    return SweepConfig("aml", default_options("aml"), TrainConfig.binary(), "auc")


def _paper_multiclass() -> SweepConfig:
    # "200 training images" was all the authors had left after test and validation; cap
    # to the pool rather than fail when deduplication leaves a few images fewer.
    options = replace(default_options("multiclass"), cap_sizes=True)
    return SweepConfig("multiclass", options, TrainConfig.multiclass(), "weighted_f1")


# Stain- and scale-robust training for models meant for other labs' images: the paper's
# protocols and settings, plus each training image zoomed by up to 1.25x either way (labs
# crop and magnify differently; a 1.25x zoom flipped 8-25 % of the paper models' calls) and
# its colour changed (brightness, contrast, saturation +-15 %, channel gains +-7.5 %: stains
# differ in strength and tint). `training.augment` says how; the paper presets are left as
# they are.
ROBUST = dict(scale_jitter=0.25, colour_jitter=0.15)


def _robust(paper: Callable[[], SweepConfig]) -> Callable[[], SweepConfig]:
    return lambda: paper().with_train(**ROBUST)


# For a lab that wants the best network from few images rather than a reproduction: the
# paper's protocol and settings, each fold and size trained 5 times from 5 initialisations
# and scored as one ensemble (the mean of their probabilities; analysis.ensemble), a dead
# network re-initialised (up to 3 times). On ALL-IDB2's 10 folds an ensemble of 3 raised the
# mean AUC at 10 images from 0.73 +- 0.24 to 0.88 +- 0.09 (docs/results/all-idb2-recipe,
# where the ablations are).
ENSEMBLE_NETWORKS = 5
# Eight cell types: 3 networks, not 5, because one multiclass training (1,200 oversampled
# images an epoch, 96-312 epochs) takes 5-20 min on a 2-core machine, and 3 is what was
# measured: on PBC's folds 0-4 the weighted F1 rose from 0.748 +- 0.024 for one network to
# 0.808 +- 0.029, better in every fold (docs/results/pbc-multiclass-methods).
MULTICLASS_ENSEMBLE_NETWORKS = 3


def _ensemble(paper: Callable[[], SweepConfig], networks: int = ENSEMBLE_NETWORKS
              ) -> Callable[[], SweepConfig]:
    return lambda: paper().with_options(replicates=networks, ensemble=True).with_train(restarts=3)


def _quick() -> SweepConfig:
    # The ALL split, but only 2 of its 10 folds, 3 sizes and short trainings.
    options = replace(default_options("all"), sizes=(10, 50, 100), run_folds=2, cap_sizes=True)
    return SweepConfig("all", options, TrainConfig.binary(max_epochs=30, patience=10), "auc")


PRESETS: dict[str, tuple[str, Callable[[], SweepConfig]]] = {
    "paper-all-binary": ("ALL-IDB2 blast vs other: 10 folds, sizes 10..200, ROC-AUC", _paper_all_binary),
    "paper-aml-binary": ("AML-LMU blast vs other: 10 folds, 600 test images, sizes 10..100 and 200",
                         _paper_aml_binary),
    "paper-multiclass": ("ALL-IDB2 cell types: 10 folds, 200 training images, weighted F1",
                         _paper_multiclass),
    "robust-all-binary": ("paper-all-binary plus scale and colour augmentation, for other "
                          "labs' images", _robust(_paper_all_binary)),
    "robust-aml-binary": ("paper-aml-binary plus scale and colour augmentation",
                          _robust(_paper_aml_binary)),
    "robust-multiclass": ("paper-multiclass plus scale and colour augmentation",
                          _robust(_paper_multiclass)),
    "robust-stain-all-binary": ("robust-all-binary plus Reinhard stain normalisation fitted "
                                "on the training cells", lambda: _robust(_paper_all_binary)()
                                .with_train(stain_norm="reinhard")),
    "ensemble-all-binary": ("paper-all-binary, each fold and size an ensemble of 5 networks "
                            "(dead ones re-initialised): the best from few images",
                            _ensemble(_paper_all_binary)),
    "ensemble-aml-binary": ("paper-aml-binary, each fold and size an ensemble of 5 networks",
                            _ensemble(_paper_aml_binary)),
    "ensemble-multiclass": ("paper-multiclass, each fold an ensemble of 3 networks",
                            _ensemble(_paper_multiclass, MULTICLASS_ENSEMBLE_NETWORKS)),
    "quick": ("a few-minute look: 2 folds, sizes 10, 50, 100, at most 30 epochs", _quick),
}


# How a sweep runs, not what it computes, so no part of a SweepConfig: trainings in
# parallel (worker processes) and networks trained at once in one process. The defaults of
# `sweep_dataset`, `run_shortcut` and the CLI (tests/test_cli.py checks they agree).
JOBS = 1
BATCH_MODELS = 1

# The preset a dataset layout gets without --preset: its paper experiment.
DEFAULT_PRESET = {"aml-lmu": "paper-aml-binary"}
FALLBACK_PRESET = "paper-all-binary"  # every other layout (ALL-IDB2's experiment)


def default_preset(dataset: str) -> str:
    return DEFAULT_PRESET.get(dataset, FALLBACK_PRESET)


def sweep_config(dataset: str, preset: str | None = None, *,
                 options: Mapping[str, Any] | None = None,
                 train: Mapping[str, Any] | None = None, model: str | None = None) -> SweepConfig:
    """Preset `preset` (default: the layout's, `default_preset`) with protocol `options`
    and `train` settings changed where given (None values are ignored), training `model`
    (default the preset's): what `sweep` and `shortcut` run."""
    config = get_preset(preset or default_preset(dataset))
    config = config.with_options(**(options or {})).with_train(**(train or {}))
    if model is None:
        return config
    # A CNN kind sets the network's width (a baseline trains no network: width stays 1).
    width = check_model(model).width
    return replace(config, model=model, train=replace(config.train, width=width))


def task_positive(dataset: str, positive: str | Sequence[str] | None,
                  multiclass: bool) -> list[str] | None:
    """The positive classes to load layout `dataset` with: none for a multiclass task,
    else those named (a comma-separated string or a list), else the layout's default."""
    from leukolearn.data.classes import default_positive

    if multiclass:
        return None
    if positive is None:
        return default_positive(dataset)
    if isinstance(positive, str):
        return [p.strip() for p in positive.split(",") if p.strip()] or None
    return list(positive)


def load_for_sweep(config: SweepConfig, dataset: str, root: str | Path, *,
                   positive: str | Sequence[str] | None = None, **load: Any) -> "CellImages":
    """Layout `dataset` at `root` loaded for the task of `config`: every class for a
    multiclass sweep (`positive` is then ignored), else binary. `load`: the other options
    of `data.dataset.load_dataset` (size, label_table, masks_dir, dedupe,
    allow_outside_root, progress). The result's `source` records how it was loaded, which
    is what the run's dataset.json keeps."""
    from leukolearn.data.dataset import load_dataset

    return load_dataset(dataset, root, positive=task_positive(dataset, positive,
                                                              config.multiclass), **load)


def get_preset(name: str) -> SweepConfig:
    try:
        return PRESETS[name][1]()
    except KeyError:
        raise LeukolearnError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
