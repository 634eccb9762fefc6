"""One train/validation/test split, one training, its outputs on disk.

The split is one fold of the paper's ALL protocol (`protocol`), so `train` and a sweep
agree on what a split is.

This is `leukolearn train` and `leukolearn demo`; the sweeps of the paper (many splits
and sizes) live in `protocol` and `sweep`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.files import check_writable_dir, write_json
from leukolearn.analysis.metrics import confusion, roc_auc, weighted_f1
from leukolearn.experiments.protocol import Job, ProtocolOptions, make_plan

# Training and model files (torch) are imported where used: the CLI reads SplitSizes'
# defaults for its help when it starts, and should not wait a second and a half for torch.
if TYPE_CHECKING:  # pragma: no cover
    from leukolearn.training.config import TrainConfig


@dataclass(frozen=True)
class SplitSizes:
    train: int = 200
    val: int = 25
    test: int = 25

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            if getattr(self, part) < 1:
                raise LeukolearnError(f"--{part}-size must be at least 1, got {getattr(self, part)}")


def single_split(cells: CellImages, sizes: SplitSizes, *, seed: int, fold: int = 0) -> Job:
    """One job of the paper's ALL protocol: fold `fold` of a stratified partition into
    round(N / test) folds is the test set, `val` images of the next fold validate, and a
    class-balanced `train` images of the rest train. A training size larger than the pool
    is cut to the pool with a warning (ALL-IDB2 without its 13 near-duplicates has 247
    images, so 25 + 25 leave 197, not the paper's 200)."""
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise LeukolearnError(f"seed must be 0 or more, got {seed}")
    for name, count in cells.class_counts().items():
        if count < 3:
            raise LeukolearnError(
                f"class {name!r} has {count} image(s); each class needs at least 3 "
                "(one each for training, validation and test)"
            )
    folds = max(2, round(len(cells) / sizes.test))
    if not 0 <= fold < folds:
        raise LeukolearnError(f"--fold must be between 0 and {folds - 1}, got {fold}")
    options = ProtocolOptions(folds=folds, sizes=(sizes.train,), val_size=sizes.val, seed=seed,
                              run_folds=fold + 1, cap_sizes=True)
    return make_plan("all", cells.labels, options)[fold]


def evaluate(cells: CellImages, test_idx: np.ndarray, probs: np.ndarray) -> dict:
    """Test metrics: ROC-AUC for two classes, weighted F1 and confusion counts always."""
    y = cells.labels[test_idx]
    pred = probs.argmax(axis=1)
    metrics = {
        "n_test": int(len(test_idx)),
        "accuracy": float((pred == y).mean()),
        "weighted_f1": weighted_f1(y, pred),
        "confusion": confusion(y, pred, cells.n_classes).tolist(),
        "class_names": list(cells.class_names),
    }
    if cells.n_classes == 2:
        metrics["roc_auc"] = roc_auc(y, probs[:, 1])
    return metrics


def default_train_config(cells: CellImages, **overrides) -> TrainConfig:
    """The paper's settings for the task: binary -> RMSprop, more classes -> Adam + oversampling."""
    from leukolearn.training.config import TrainConfig

    if cells.n_classes == 2:
        return TrainConfig.binary(**overrides)
    return TrainConfig.multiclass(**overrides)


def train_and_evaluate(
    cells: CellImages, sizes: SplitSizes, config: TrainConfig, *, seed: int, out_dir: Path,
    fold: int = 0, progress: bool = True,
) -> dict:
    """Split (see `single_split`), train, test, and write model.safetensors, history.json, metrics.json,
    split.json and train_config.json into out_dir. Returns the metrics."""
    from leukolearn.analysis.domain import attach_domain_check
    from leukolearn.model.weights import save_model
    from leukolearn.training.loop import predict_proba, train_model

    check_writable_dir(out_dir)  # before the training: its result must have a place to go
    job = single_split(cells, sizes, seed=seed, fold=fold)
    split = {"train": job.train_idx, "val": job.val_idx, "test": job.test_idx}
    result = train_model(cells, job.train_idx, job.val_idx, config, seed=job.seed,
                                      progress=progress)
    # The domain check travels with the model (analysis.domain): fitted on its training
    # cells, scaled by its validation cells.
    attach_domain_check(result.model, cells.images[list(job.train_idx)],
                        cells.images[list(job.val_idx)])
    probs = predict_proba(result.model, cells.images[list(job.test_idx)])
    metrics = evaluate(cells, np.asarray(job.test_idx), probs)
    metrics.update(best_epoch=result.best_epoch, epochs_run=result.epochs_run,
                   seconds=round(result.seconds, 1), degenerate=result.degenerate,
                   restarts=result.restarts,
                   # how it ran, as a sweep records it per job: the float sums depend on it
                   kernels=result.kernels, threads=result.threads, device=result.device,
                   n_train=len(job.train_idx), n_val=len(job.val_idx), seed=seed, fold=fold,
                   dataset_fingerprint=cells.fingerprint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The model first: if the disk fills on a later file, the training is still kept.
    save_model(result.model, out_dir / "model.safetensors")
    write_json(out_dir / "history.json", result.history)
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "train_config.json", config.to_dict())
    write_json(out_dir / "split.json", {
        part: [cells.image_ids[i] for i in idx] for part, idx in split.items()
    })
    return metrics
