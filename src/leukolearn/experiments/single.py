"""One train/validation/test split, one training, its outputs on disk.

On ALL-IDB2 the split is one fold of the paper's ALL protocol (`protocol`), so `train`
and a sweep agree on what a split is there; on any other dataset its test and validation
sets are drawn class by class (`balanced_split`: balanced for two classes), so that a
rare positive class is not tested on three cells. The test metric comes with its
bootstrap interval, and a warning where the test set is too small to decide on.

This is `leukolearn train` and `leukolearn demo`; the sweeps of the paper (many splits
and sizes) live in `protocol` and `sweep`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.files import check_writable_dir, write_json
from leukolearn.analysis.metrics import confusion, roc_auc, weighted_f1
from leukolearn.experiments.protocol import (Job, ProtocolOptions, balanced_order, job_seed,
                                             make_plan)

# Training and model files (torch) are imported where used: the CLI reads SplitSizes'
# defaults for its help when it starts, and should not wait a second and a half for torch.
if TYPE_CHECKING:  # pragma: no cover
    from leukolearn.training.config import TrainConfig


PAPER_VAL = PAPER_TEST = 25  # the single split of the paper's ALL-IDB2 protocol
# Fewer test cells of a class than this and a test metric is too uncertain to decide on:
# with n positives, one of them ranked otherwise moves the AUC by up to 1/n, more than 0.1
# below 10 (the step from a usable classifier to a poor one). Also the least test images
# a class of the multiclass default.
MIN_PER_CLASS = 10
# The multiclass default validation set: at least MIN_PER_CLASS a class or this share of
# the class's images, whichever is smaller. Early stopping compares validation losses
# epoch to epoch; with the 4 images a class that 25 over 6 classes give, one image decides
# whether an epoch "improves" and patience stops on noise; 10 a class average the loss
# over enough images, and the 20 % cap leaves a small class most of its images to train on.
VAL_SHARE = 0.2


@dataclass(frozen=True)
class SplitSizes:
    """Images to train, validate (early stopping) and test on. val / test None: the
    task's default (`default_split`): 25 each (ALL-IDB2, and two classes elsewhere);
    more classes: at least MIN_PER_CLASS test images a class, and the validation set
    VAL_SHARE says."""
    train: int = 200
    val: int | None = None
    test: int | None = None

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            value = getattr(self, part)
            if value is not None and value < 1:
                raise LeukolearnError(f"--{part}-size must be at least 1, got {value}")


def default_split(cells: CellImages, sizes: SplitSizes, *, seed: int, fold: int = 0) -> Job:
    """The split `train` trains and tests on. ALL-IDB2: the paper's protocol fold
    (`single_split`), as in the paper; any other dataset: `balanced_split`, whose test set
    holds enough of every class to mean something where the data allow."""
    if cells.source is not None and cells.source.name == "all-idb2":
        return single_split(cells, sizes, seed=seed, fold=fold)
    return balanced_split(cells, sizes, seed=seed, fold=fold)


def single_split(cells: CellImages, sizes: SplitSizes, *, seed: int, fold: int = 0) -> Job:
    """One job of the paper's ALL protocol: fold `fold` of a stratified partition into
    round(N / test) folds is the test set, the next fold validates (all of it, as in the
    authors' script and `sweep`, or `val` images of it), and a class-balanced `train`
    images of the rest train. With the default sizes this is the sweep's job
    f{fold}-n{train}-s0 of the same seed, the same images and the same training seed. A
    training size larger than the pool is cut to the pool with a warning (ALL-IDB2 without
    its 13 near-duplicates has 247 images in folds of 24 or 25, which leave 197 or 198,
    not the paper's 200)."""
    _check_classes(cells, seed)
    test = PAPER_TEST if sizes.test is None else sizes.test
    folds = max(2, round(len(cells) / test))
    if not 0 <= fold < folds:
        raise LeukolearnError(f"--fold must be between 0 and {folds - 1}, got {fold}")
    options = ProtocolOptions(folds=folds, sizes=(sizes.train,), val_size=sizes.val, seed=seed,
                              run_folds=fold + 1, cap_sizes=True)
    return make_plan("all", cells.labels, options)[fold]


def balanced_split(cells: CellImages, sizes: SplitSizes, *, seed: int, fold: int = 0) -> Job:
    """Test and validation sets drawn class by class, then a class-balanced `train`
    images of the rest (cut to the rest with a warning).

    Two classes: balanced, as the paper's test sets are (ALL-IDB2 is balanced; its AML
    protocol draws balanced sets): half of the test (validation) size from each class,
    both cut to what the smaller class can give -- a third of it to the test set, half of
    what is left to validation -- with a warning. More classes: stratified (each class its
    share), at least one image of every class; at the default sizes at least
    MIN_PER_CLASS test images a class, and the validation set VAL_SHARE describes. Fold f
    is the f-th of the disjoint test sets drawn so, from one seeded order per class."""
    _check_classes(cells, seed)
    labels = cells.labels
    counts = np.bincount(labels, minlength=cells.n_classes)
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(np.flatnonzero(labels == c)) for c in range(cells.n_classes)]
    test_q = _per_class(cells, counts, sizes.test, counts // 3, "test",
                        floor=np.minimum(MIN_PER_CLASS, counts) if sizes.test is None else 1)
    folds = int(min(counts // test_q))
    if not 0 <= fold < folds:
        raise LeukolearnError(f"--fold must be between 0 and {folds - 1}, got {fold}")
    test = np.concatenate([s[fold * q:(fold + 1) * q] for s, q in zip(shuffled, test_q)])
    fold_rng = np.random.default_rng([seed, fold])
    rest = [fold_rng.permutation(np.setdiff1d(s, test)) for s in shuffled]
    val_floor = (np.minimum(MIN_PER_CLASS, np.ceil(VAL_SHARE * counts).astype(int))
                 if sizes.val is None else 1)
    val_q = _per_class(cells, counts, sizes.val, (counts - test_q) // 2, "validation",
                       floor=val_floor)
    val = np.concatenate([r[:q] for r, q in zip(rest, val_q)])
    pool = np.concatenate([r[q:] for r, q in zip(rest, val_q)])
    order = balanced_order(pool, labels, fold_rng)
    size = sizes.train
    if size > len(order):
        warnings.warn(f"training sizes [{size}] capped to the training pool ({len(order)} "
                      "images)", stacklevel=3)
        size = len(order)
    return Job(job_id=f"f{fold:02d}-n{size}-s0", fold=fold, size=size,
               seed=job_seed(seed, fold, size, 0),
               train_idx=tuple(np.sort(order[:size]).tolist()),
               val_idx=tuple(np.sort(val).tolist()), test_idx=tuple(np.sort(test).tolist()))


def _per_class(cells: CellImages, counts: np.ndarray, wanted: int | None, cap: np.ndarray,
               what: str, floor) -> np.ndarray:
    """Images a class for a test or validation set of `wanted` (None: 25) images,
    none above `cap`; see `balanced_split`."""
    wanted = PAPER_TEST if wanted is None else wanted
    if len(counts) == 2:
        half = max(1, wanted // 2)
        if half > cap.min():  # balanced, cut to what the smaller class can give
            small = int(np.argmin(cap))
            q = np.full(2, cap.min())
            share = "a third" if what == "test" else "half of those not tested"
            warnings.warn(f"{what} set cut from {wanted} to {2 * cap.min()} images, "
                          f"{cap.min()} a class to keep it balanced: class "
                          f"{cells.class_names[small]!r} has {counts[small]} images, "
                          f"{share} of which can go to it", stacklevel=4)
            return q
        q = np.full(2, half)
        big = int(np.argmax(counts))
        if 2 * half < wanted and half < cap[big]:  # an odd size: the one more from the larger
            q[big] += 1
        return q
    share = wanted * counts / counts.sum()  # stratified: largest remainders
    q = np.floor(share).astype(int)
    q[np.argsort(q - share, kind="stable")[:wanted - q.sum()]] += 1
    return np.minimum(cap, np.maximum(q, floor))


def _check_classes(cells: CellImages, seed: int) -> None:
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise LeukolearnError(f"seed must be 0 or more, got {seed}")
    for name, count in cells.class_counts().items():
        if count < 3:
            raise LeukolearnError(
                f"class {name!r} has {count} image(s); each class needs at least 3 "
                "(one each for training, validation and test)"
            )


def evaluate(cells: CellImages, test_idx: np.ndarray, probs: np.ndarray, *, seed: int = 0,
             n_resamples: int = 2000) -> dict:
    """Test metrics: ROC-AUC for two classes, weighted F1 and confusion counts always; the
    95 % interval of each headline metric by a stratified bootstrap (`n_resamples`, seeded
    by `seed`); `warnings`: what makes the number no basis for a decision (a class with
    fewer than MIN_PER_CLASS test cells)."""
    from leukolearn.analysis.metrics import (roc_auc_by_ranks, stratified_bootstrap_ci,
                                             weighted_f1_by_counts)

    y = cells.labels[test_idx]
    pred = probs.argmax(axis=1)
    n_test = np.bincount(y, minlength=cells.n_classes)
    metrics = {
        "n_test": int(len(test_idx)),
        "test_class_counts": dict(zip(cells.class_names, n_test.tolist())),
        "accuracy": float((pred == y).mean()),
        "weighted_f1": weighted_f1(y, pred),
        "confusion": confusion(y, pred, cells.n_classes).tolist(),
        "class_names": list(cells.class_names),
    }
    metrics["weighted_f1_ci"] = list(stratified_bootstrap_ci(
        weighted_f1_by_counts, y, pred, seed=seed, n_resamples=n_resamples))
    headline = ("weighted_f1", "weighted F1")
    if cells.n_classes == 2:
        metrics["roc_auc"] = roc_auc(y, probs[:, 1])
        metrics["roc_auc_ci"] = list(stratified_bootstrap_ci(
            roc_auc_by_ranks, y, probs[:, 1], seed=seed, n_resamples=n_resamples))
        headline = ("roc_auc", "ROC-AUC")
    metrics["warnings"] = small_test_warnings(metrics, *headline)
    return metrics


def small_test_warnings(metrics: dict, key: str, label: str) -> list[str]:
    """One warning when a class has fewer than MIN_PER_CLASS test cells: how many, the
    interval, and where to measure instead."""
    few = {name: n for name, n in metrics["test_class_counts"].items() if n < MIN_PER_CLASS}
    if not few:
        return []
    low, high = metrics[f"{key}_ci"]
    counts = " and ".join(f"{n} {name!r}" for name, n in few.items())
    interval = "undefined" if low != low else f"{low:.2f}-{high:.2f}"
    return [f"the test set holds only {counts} cells (fewer than {MIN_PER_CLASS} of a class): "
            f"its {label} is no basis for a decision (95% interval {interval}; on so few "
            "cells the interval is wide, and a bootstrap can even understate it); measure on "
            "more labelled cells with `leukolearn sweep`, or `leukolearn evaluate` a model on "
            "cells it has not seen"]


def default_train_config(cells: CellImages, **overrides) -> TrainConfig:
    """The paper's settings for the task: binary -> RMSprop, more classes -> Adam + oversampling."""
    from leukolearn.training.config import TrainConfig

    if cells.n_classes == 2:
        return TrainConfig.binary(**overrides)
    return TrainConfig.multiclass(**overrides)


def train_and_evaluate(
    cells: CellImages, sizes: SplitSizes, config: TrainConfig, *, seed: int, out_dir: Path,
    fold: int = 0, progress: bool = True, ensemble: int = 1,
) -> dict:
    """Split (see `default_split`), train, test, and write model.safetensors, history.json,
    metrics.json, split.json and train_config.json into out_dir. Returns the metrics; each
    of their `warnings` is also issued (`warnings.warn`: the CLI prints `warning:` lines).
    A head start (`config.init_from`) is recorded in the model file's config
    (`extra["init_from"]`: the file and the checksum of its weights).

    `ensemble` K > 1 trains K networks on the same split, from the seeds a sweep gives
    replicates 0..K-1 of this job (network 0 is the single training's), tests the mean of
    their probabilities and saves them as one ensemble file (`model.weights.save_models`);
    history.json then holds {"members": [one history per network]} and metrics.json a
    "members" list of each network's epochs, time and restarts."""
    from leukolearn.analysis.domain import attach_domain_check
    from leukolearn.model.weights import save_models
    from leukolearn.training.head_start import load_head_start
    from leukolearn.training.loop import predict_proba, train_model

    if ensemble < 1:
        raise LeukolearnError(f"an ensemble needs 1 or more networks, got {ensemble}")
    check_writable_dir(out_dir)  # before the training: its result must have a place to go
    # A bad file fails before the split and training; read once, for both.
    head = load_head_start(config.init_from, config.freeze_features)
    job = default_split(cells, sizes, seed=seed, fold=fold)
    split = {"train": job.train_idx, "val": job.val_idx, "test": job.test_idx}
    seeds = [job.seed] + [job_seed(seed, job.fold, job.size, k) for k in range(1, ensemble)]
    results = []
    for member_seed in seeds:
        result = train_model(cells, job.train_idx, job.val_idx, config, seed=member_seed,
                             progress=progress, head=head)
        # The domain check travels with the model (analysis.domain): fitted on its training
        # cells, scaled by its validation cells.
        attach_domain_check(result.model, cells.images[list(job.train_idx)],
                            cells.images[list(job.val_idx)])
        if head is not None:
            result.model.config = replace(result.model.config, extra={
                **result.model.config.extra,
                "init_from": {"path": str(head.path), "weights_blake2b": head.digest}})
        results.append(result)
    test_images = cells.images[list(job.test_idx)]
    probs = np.mean([predict_proba(r.model, test_images) for r in results], axis=0)
    metrics = evaluate(cells, np.asarray(job.test_idx), probs, seed=seed)
    first = results[0]
    metrics.update(best_epoch=first.best_epoch, epochs_run=first.epochs_run,
                   seconds=round(sum(r.seconds for r in results), 1),
                   degenerate=bool(np.ptp(probs, axis=0).max() == 0) if ensemble > 1 else first.degenerate,
                   restarts=sum(r.restarts for r in results),
                   # how it ran, as a sweep records it per job: the float sums depend on it
                   kernels=first.kernels, threads=first.threads, device=first.device,
                   n_train=len(job.train_idx), n_val=len(job.val_idx), seed=seed, fold=fold,
                   dataset_fingerprint=cells.fingerprint)
    if ensemble > 1:
        metrics["ensemble"] = ensemble
        metrics["members"] = [{"seed": s, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                               "seconds": round(r.seconds, 1), "degenerate": r.degenerate,
                               "restarts": r.restarts} for s, r in zip(seeds, results)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The model first: if the disk fills on a later file, the training is still kept.
    save_models([r.model for r in results], out_dir / "model.safetensors")
    write_json(out_dir / "history.json", first.history if ensemble == 1 else
               {"members": [r.history for r in results]})
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "train_config.json", config.to_dict())
    write_json(out_dir / "split.json", {
        part: [cells.image_ids[i] for i in idx] for part, idx in split.items()
    })
    for message in metrics["warnings"]:  # once the results are written: about them
        warnings.warn(message, stacklevel=2)
    return metrics
