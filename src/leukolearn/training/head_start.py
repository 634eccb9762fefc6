"""A head start (`TrainConfig.init_from`): a training that begins from another model's weights.

What is copied into the fresh network: the conv blocks (`features.*`), always (a source
with other blocks is refused); the hidden dense layer (`hidden.*`) where its shape
matches; the classifier only when the source has the same classes under the same names
(a model of "other"/"blast" fine-tuned on "other"/"ig" must not start by calling every ig
a blast). What is not copied keeps the fresh network's seeded initialisation, so a
restart (TrainConfig.restarts) starts again from the same loaded weights with a new
classifier draw from its own seed. `freeze_features` keeps the conv blocks fixed: their
parameters stop requiring a gradient and are left out of the optimiser, so they stay
bit-identical.

The source is read once per training (`load_head_start`), not per restart or epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from leukolearn.errors import BadFileError, LeukolearnError
from leukolearn.model.cnn import ModelConfig, PaperCNN

MODEL_FILE = "model.safetensors"  # what `train --out` writes into its folder
FEATURES, HIDDEN, CLASSIFIER = "features.", "hidden.", "classifier."


@dataclass(frozen=True)
class HeadStart:
    path: Path  # the model file, absolute
    config: ModelConfig  # the source's
    state: dict  # the source's weights (name -> tensor, CPU)
    freeze: bool  # TrainConfig.freeze_features
    digest: str  # BLAKE2b of the weights, as the file stores it (`model.weights`)


def model_file(path: str | Path) -> Path:
    """`path` as a model file: the file itself, or a `train --out` folder holding
    model.safetensors; absolute. A BadFileError when neither is there."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise BadFileError(path, f"a folder without {MODEL_FILE}; give a model file "
                                     "or a folder written by `leukolearn train --out`")
        path = path / MODEL_FILE
    if not path.is_file():
        raise BadFileError(path, "no such model file")
    return path.resolve()


def load_head_start(init_from: str | Path | None, freeze: bool = False) -> HeadStart | None:
    """The source model of a head start, read and checked once; None without one."""
    if not init_from:
        return None
    from leukolearn.model.weights import load_model, weights_digest

    path = model_file(init_from)
    source = load_model(path)
    state = {k: v.detach().clone() for k, v in source.state_dict().items()}
    # load_model refused a file whose weights do not match its stored checksum, so this
    # equals the stored one (and gives one to a format-1 file, which stores none).
    return HeadStart(path, source.config, state, freeze, weights_digest(state))


def check_compatible(head: HeadStart, config: ModelConfig) -> None:
    """A LeukolearnError naming the file when its conv blocks cannot start `config`'s network."""
    src = head.config
    if src.input_size != config.input_size:
        raise LeukolearnError(
            f"--init-from {head.path}: a model of {src.input_size} px images, but this "
            f"training's images are {config.input_size} px; load them at --size "
            f"{src.input_size}, or start from a model of their size")
    if tuple(src.filters) != tuple(config.filters):
        raise LeukolearnError(
            f"--init-from {head.path}: conv blocks of {list(src.filters)} filters, this "
            f"network has {list(config.filters)}")


def apply_head_start(model: PaperCNN, head: HeadStart | None) -> PaperCNN:
    """`model` (freshly built, seeded) with the head start's weights copied in, and its
    conv blocks frozen when asked; unchanged without a head start."""
    if head is None:
        return model
    check_compatible(head, model.config)
    own = model.state_dict()
    take = [k for k in own if k.startswith(FEATURES)]
    hidden = [k for k in own if k.startswith(HIDDEN)]
    if all(own[k].shape == head.state[k].shape for k in hidden):
        take += hidden
    same_classes = (head.config.n_classes == model.config.n_classes
                    and tuple(head.config.class_names) == tuple(model.config.class_names))
    if same_classes and head.config.hidden == model.config.hidden:
        take += [k for k in own if k.startswith(CLASSIFIER)]
    with torch.no_grad():
        for k in take:
            own[k].copy_(head.state[k].to(own[k].device, own[k].dtype))
    if head.freeze:
        for p in model.features.parameters():
            p.requires_grad_(False)
    return model


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimiser moves: all but the frozen ones."""
    return [p for p in model.parameters() if p.requires_grad]


def frozen_names(head: HeadStart | None) -> frozenset[str]:
    """Names of the state entries a training must not move (the frozen conv blocks), for
    the stacked parameters of `batched.train_many`."""
    if head is None or not head.freeze:
        return frozenset()
    return frozenset(k for k in head.state if k.startswith(FEATURES))
