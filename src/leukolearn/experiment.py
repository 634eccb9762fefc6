"""One train/validation/test split, one training, its outputs on disk.

This is `leukolearn train` and `leukolearn demo`; the sweeps of the paper (many splits
and sizes) live in `protocol` and `sweep`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukolearn.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.metrics import confusion, roc_auc, weighted_f1
from leukolearn.model import save_model
from leukolearn.train import TrainConfig, TrainResult, predict_proba, train_model


@dataclass(frozen=True)
class SplitSizes:
    train: int = 200
    val: int = 25
    test: int = 25


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_split(labels: np.ndarray, sizes: SplitSizes, seed: int) -> Split:
    """Disjoint test, validation and training indices, each class-balanced as far as the
    classes allow (every class gets its share rounded, remainders to the largest classes)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    pool = rng.permutation(len(labels))
    parts = []
    for n in (sizes.test, sizes.val, sizes.train):
        take = _balanced_take(labels, pool, n)
        parts.append(np.sort(take))
        pool = np.setdiff1d(pool, take, assume_unique=True)
        pool = rng.permutation(pool)
    return Split(test=parts[0], val=parts[1], train=parts[2])


def _balanced_take(labels: np.ndarray, pool: np.ndarray, n: int) -> np.ndarray:
    classes = np.unique(labels)
    available = {c: pool[labels[pool] == c] for c in classes}
    if n > len(pool):
        raise LeukolearnError(f"asked for {n} images but only {len(pool)} are left for this split")
    # Round-robin over classes: equal shares, a class that runs out leaves its turn to others.
    taken = {c: 0 for c in classes}
    chosen: list[int] = []
    while len(chosen) < n:
        for c in classes:
            if len(chosen) == n:
                break
            if taken[c] < len(available[c]):
                chosen.append(int(available[c][taken[c]]))
                taken[c] += 1
    return np.asarray(chosen, dtype=np.int64)


def fit_split_to_data(cells: CellImages, sizes: SplitSizes) -> tuple[SplitSizes, str]:
    """The split to use, and a note when the training set had to shrink.

    Test and validation sizes are kept; a training size larger than what is left is cut
    to what is left (ALL-IDB2 without its 13 near-duplicates has 247 images, so 25 + 25
    leave 197, not the paper's 200). Splits the data cannot fill are refused, naming the
    class that is short.
    """
    for name, count in cells.class_counts().items():
        if count < 3:
            raise LeukolearnError(
                f"class {name!r} has {count} image(s); each class needs at least 3 "
                "(one each for training, validation and test)"
            )
    left = len(cells) - sizes.val - sizes.test
    if left < 2:
        raise LeukolearnError(
            f"val {sizes.val} + test {sizes.test} images leave {max(left, 0)} for training, "
            f"but the dataset has only {len(cells)}"
        )
    if sizes.train <= left:
        return sizes, ""
    note = (f"only {left} images are left for training after {sizes.test} test and "
            f"{sizes.val} validation images; training on {left} instead of {sizes.train}")
    return SplitSizes(train=left, val=sizes.val, test=sizes.test), note


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
    if cells.n_classes == 2:
        return TrainConfig.binary(**overrides)
    return TrainConfig.multiclass(**overrides)


def train_and_evaluate(
    cells: CellImages, sizes: SplitSizes, config: TrainConfig, *, seed: int, out_dir: Path,
    progress: bool = True,
) -> dict:
    """Split, train, test, and write model.safetensors, history.json, metrics.json,
    split.json and train_config.json into out_dir. Returns the metrics."""
    sizes, note = fit_split_to_data(cells, sizes)
    if note and progress:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]note:[/yellow] {note}")
    split = stratified_split(cells.labels, sizes, seed)
    result: TrainResult = train_model(cells, split.train, split.val, config, seed=seed,
                                      progress=progress)
    probs = predict_proba(result.model, cells.images[split.test])
    metrics = evaluate(cells, split.test, probs)
    metrics.update(best_epoch=result.best_epoch, epochs_run=result.epochs_run,
                   seconds=round(result.seconds, 1), degenerate=result.degenerate,
                   n_train=len(split.train), n_val=len(split.val), seed=seed,
                   dataset_fingerprint=cells.fingerprint)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(result.model, out_dir / "model.safetensors")
    _write_json(out_dir / "history.json", result.history)
    _write_json(out_dir / "metrics.json", metrics)
    _write_json(out_dir / "train_config.json", config.to_dict())
    _write_json(out_dir / "split.json", {
        part: [cells.image_ids[i] for i in getattr(split, part)] for part in ("train", "val", "test")
    })
    return metrics


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
