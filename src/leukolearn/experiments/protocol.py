"""The paper's cross-validation protocols as plain index arrays.

A protocol turns the labels of a `CellImages` into a Plan: a list of `Job`s, one per
(fold, training size, replicate), each with explicit train / validation / test indices.
Nothing here trains or reads pixels, so every property of a split can be tested on a label
array alone. Every random choice comes from `ProtocolOptions.seed` (numpy `default_rng`);
the same labels and options give the same plan, and fold f's jobs do not depend on how
many folds are run (`run_folds`), so a quick look and a full run share their first folds.

Protocols
- "all" (ALL-IDB2): the images are partitioned, stratified by class, into `folds` test
  sets, so every image is tested exactly once (260 images -> 26 per fold). Validation is
  the next fold's test set, as in the authors' script (or `val_size` images of it). The
  rest is the fold's training pool; training sets are nested, class-balanced prefixes of
  one shuffled order of that pool (each size contains the smaller ones).
- "aml" (AML-Cytomorphology_LMU): a class-balanced test set per fold (600 by default),
  disjoint across folds; validation is drawn from the training pool, never from the test
  set (the authors' script validated on the test set; we do not).
- "multiclass": the "all" split on every class that has at least `min_per_class` images
  (see `keep_classes`); the trainer oversamples each class, the protocol only picks images.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError

ALL_SIZES = tuple(range(10, 201, 10))
AML_SIZES = tuple(range(10, 101, 10)) + (200,)
AML_TEST_SIZE = 600
AML_VAL_SIZE = 25  # the ALL protocol's validation size; the paper does not give one for AML
MULTICLASS_MIN_PER_CLASS = 5


@dataclass(frozen=True)
class ProtocolOptions:
    """Everything that shapes a plan. None means "the protocol's own default" (see module doc)."""

    folds: int = 10
    sizes: tuple[int, ...] = ALL_SIZES
    test_size: int | None = None  # "aml": images per fold (600); "all"/"multiclass": must be None
    val_size: int | None = None  # "all": None = the next fold's whole test set; "aml": None = 25
    seed: int = 0  # the one seed every split and every job seed derive from
    replicates: int = 1  # trainings per (fold, size), each from its own initialisation seed
    # Score the replicates of a (fold, size) as one model, the mean of their probabilities
    # (analysis.ensemble); False: each network on its own, as the paper did.
    ensemble: bool = False
    # Plan only some folds (the partition still has `folds`): an int k, the first k; a
    # tuple, those folds (0-based), e.g. a sweep split over sessions or machines.
    run_folds: int | tuple[int, ...] | None = None
    min_per_class: int = 0  # classes with fewer images are dropped before planning (multiclass: 5)
    cap_sizes: bool = False  # sizes above the training pool: False -> error, True -> cap + warning

    def __post_init__(self) -> None:
        sizes = tuple(sorted({int(s) for s in self.sizes}))
        object.__setattr__(self, "sizes", sizes)
        if self.folds < 2:
            raise LeukolearnError(f"folds must be at least 2, got {self.folds}")
        if not sizes or sizes[0] < 1:
            raise LeukolearnError(f"training sizes must be positive integers, got {list(self.sizes)}")
        for name in ("test_size", "val_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LeukolearnError(f"{name} must be at least 1, got {value}")
        if self.replicates < 1:
            raise LeukolearnError(f"replicates must be at least 1, got {self.replicates}")
        if self.ensemble and self.replicates < 2:
            raise LeukolearnError("an ensemble needs at least 2 replicates (--replicates)")
        if self.seed < 0:  # numpy's generators take non-negative seeds only
            raise LeukolearnError(f"seed must be 0 or more, got {self.seed}")
        if isinstance(self.run_folds, (list, tuple)):  # a stored config holds a list
            chosen = tuple(sorted({int(f) for f in self.run_folds}))
            object.__setattr__(self, "run_folds", chosen)
            if not chosen or not 0 <= chosen[0] <= chosen[-1] < self.folds:
                raise LeukolearnError(f"the folds to run must be from 0 to {self.folds - 1} "
                                      f"(folds={self.folds}), got {list(chosen)}")
        elif self.run_folds is not None and not 1 <= self.run_folds <= self.folds:
            raise LeukolearnError(f"run_folds must be between 1 and folds={self.folds}, got {self.run_folds}")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ProtocolOptions":
        d = dict(d)
        d["sizes"] = tuple(d["sizes"])
        return cls(**d)


@dataclass(frozen=True)
class Job:
    """One training: which images to train on, stop on, and test on (indices into CellImages)."""

    job_id: str  # "f03-n120-s0": fold 3, 120 training images, replicate 0
    fold: int
    size: int
    seed: int  # the training seed (initialisation, augmentation, batch order)
    train_idx: tuple[int, ...]
    val_idx: tuple[int, ...]
    test_idx: tuple[int, ...]
    replicate: int = 0


Plan = list[Job]


def make_plan(protocol: str, labels: np.ndarray, options: ProtocolOptions) -> Plan:
    """The plan of protocol `protocol` ("all", "aml", "multiclass") for these labels."""
    try:
        build = PROTOCOLS[protocol]
    except KeyError:
        raise LeukolearnError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}") from None
    return build(np.asarray(labels, dtype=np.int64), options)


def all_plan(labels: np.ndarray, options: ProtocolOptions) -> Plan:
    """ALL-IDB2: every image tested once; validation = the next fold's test set."""
    if options.test_size is not None:
        raise LeukolearnError(
            "this protocol tests every image exactly once, so its test size is "
            f"N / folds; change --folds instead of --test-size ({options.test_size})"
        )
    labels = np.asarray(labels, dtype=np.int64)
    parts = stratified_partition(labels, options.folds, np.random.default_rng(options.seed))
    splits = []
    for fold in folds_to_run(options):
        rng = _fold_rng(options, fold)
        test, following = parts[fold], parts[(fold + 1) % options.folds]
        val = following if options.val_size is None else _take_validation(
            following, labels, options.val_size, rng, fold,
            "the next fold's test set; lower --val-size, or leave it out to validate on all of it")
        pool = np.setdiff1d(np.arange(len(labels)), np.concatenate([test, val]))
        splits.append((fold, test, val, balanced_order(pool, labels, rng)))
    return _jobs(splits, options)


def aml_plan(labels: np.ndarray, options: ProtocolOptions) -> Plan:
    """AML: balanced test sets, disjoint across folds; validation from the training pool."""
    labels = np.asarray(labels, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise LeukolearnError("the dataset has only one class")
    n_cls = len(classes)
    wanted = AML_TEST_SIZE if options.test_size is None else options.test_size
    val_size = AML_VAL_SIZE if options.val_size is None else options.val_size
    # Per class per fold: what was asked, what keeps test sets disjoint over all folds, and
    # what still leaves a balanced pool for the largest training set plus validation.
    need = math.ceil((max(options.sizes) + val_size) / n_cls)
    per_class = min(wanted // n_cls, int(counts.min()) // options.folds, int(counts.min()) - need)
    if per_class < 1:
        raise LeukolearnError(
            f"the smallest class has {counts.min()} images: too few for {options.folds} disjoint "
            f"test sets plus {max(options.sizes)} training and {val_size} validation images; "
            "lower --folds, --sizes or --val-size"
        )
    if per_class * n_cls < wanted:
        warnings.warn(
            f"test set reduced from {wanted} to {per_class * n_cls} images per fold "
            f"({per_class} per class) so that test sets stay disjoint and leave a training pool",
            stacklevel=2,
        )
    rng = np.random.default_rng(options.seed)
    shuffled = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    splits = []
    for fold in folds_to_run(options):
        fold_rng = _fold_rng(options, fold)
        test = np.sort(np.concatenate([s[fold * per_class:(fold + 1) * per_class] for s in shuffled]))
        rest = np.setdiff1d(np.arange(len(labels)), test)
        val = _take_validation(rest, labels, val_size, fold_rng, fold,
                               "what the test sets leave; lower --val-size")
        pool = np.setdiff1d(rest, val)
        splits.append((fold, test, val, balanced_order(pool, labels, fold_rng)))
    return _jobs(splits, options)


PROTOCOLS: dict[str, Callable[[np.ndarray, ProtocolOptions], Plan]] = {
    "all": all_plan,
    "aml": aml_plan,
    # The class filter happens on the CellImages (keep_classes); the split is ALL's.
    "multiclass": all_plan,
}


def default_options(protocol: str) -> ProtocolOptions:
    """The paper's values for `protocol`."""
    if protocol == "all":
        return ProtocolOptions()
    if protocol == "aml":
        return ProtocolOptions(sizes=AML_SIZES, test_size=AML_TEST_SIZE, val_size=AML_VAL_SIZE)
    if protocol == "multiclass":
        return ProtocolOptions(sizes=(200,), min_per_class=MULTICLASS_MIN_PER_CLASS)
    raise LeukolearnError(f"unknown protocol {protocol!r}; choose from {sorted(PROTOCOLS)}")


def keep_classes(cells: CellImages, min_per_class: int) -> tuple[CellImages, dict[str, int]]:
    """Drop classes with fewer than `min_per_class` images; returns the rest and the dropped counts.

    Labels are renumbered over the kept classes, so the network gets one output per class
    it can actually learn (the paper left such classes out of its 6-class network).
    """
    counts = cells.class_counts()
    dropped = {name: n for name, n in counts.items() if n < min_per_class}
    if not dropped:
        return cells, {}
    kept = [i for i, name in enumerate(cells.class_names) if name not in dropped]
    if len(kept) < 2:
        raise LeukolearnError(f"fewer than two classes have at least {min_per_class} images: {counts}")
    index = np.flatnonzero(np.isin(cells.labels, kept))
    remap = np.full(cells.n_classes, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    subset = cells.subset(index)
    return (
        CellImages(
            images=subset.images, labels=remap[subset.labels],
            class_names=tuple(cells.class_names[i] for i in kept), image_ids=subset.image_ids,
            masks=subset.masks, groups=subset.groups,
        ),
        dropped,
    )


def stratified_partition(labels: np.ndarray, folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split all images into `folds` disjoint parts whose class counts differ by at most one.

    Each class is shuffled and the classes are dealt one after another round the folds with
    one running counter, so part sizes also differ by at most one.
    """
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    fold_of = np.empty(len(labels), dtype=np.int64)
    fold_of[order] = np.arange(len(labels)) % folds
    return [np.flatnonzero(fold_of == f) for f in range(folds)]


def balanced_order(indices: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A shuffled order of `indices` whose every prefix is as class-balanced as possible.

    Round r holds the r-th image of each class (classes in a random order within the round),
    so in any prefix the counts of two classes differ by at most one unless one is used up.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return indices
    classes = np.unique(labels[indices])
    members = [rng.permutation(indices[labels[indices] == c]) for c in classes]
    longest = max(len(m) for m in members)
    tie = rng.random((longest, len(classes)))  # random class order inside each round
    items = np.concatenate(members)
    rounds = np.concatenate([np.arange(len(m)) for m in members])
    cls = np.concatenate([np.full(len(m), k) for k, m in enumerate(members)])
    return items[np.lexsort((tie[rounds, cls], rounds))]


def _take_validation(indices: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator,
                     fold: int, source: str) -> np.ndarray:
    """A class-balanced `n` of `indices`; `source` names where they come from and the remedy."""
    if n > len(indices):
        raise LeukolearnError(f"fold {fold}: validation size {n} is more than the "
                              f"{len(indices)} images of {source}")
    return np.sort(balanced_order(indices, labels, rng)[:n])


def _jobs(splits: list, options: ProtocolOptions) -> Plan:
    """Expand (fold, test, val, training order) into one Job per size and replicate."""
    sizes = _checked_sizes(options, min(len(order) for _, _, _, order in splits))
    jobs = []
    for fold, test, val, order in splits:
        for size in sizes:
            train = tuple(np.sort(order[:size]).tolist())
            for rep in range(options.replicates):
                jobs.append(Job(
                    job_id=f"f{fold:02d}-n{size}-s{rep}", fold=fold, size=size,
                    seed=job_seed(options.seed, fold, size, rep), train_idx=train,
                    val_idx=tuple(np.sort(val).tolist()), test_idx=tuple(np.sort(test).tolist()),
                    replicate=rep,
                ))
    return jobs


def _checked_sizes(options: ProtocolOptions, pool: int) -> tuple[int, ...]:
    too_big = [s for s in options.sizes if s > pool]
    if not too_big:
        return options.sizes
    if not options.cap_sizes:
        raise LeukolearnError(
            f"training sizes {too_big} exceed the smallest fold's training pool ({pool} images); "
            "lower --sizes, or use more images"
        )
    if pool < 1:
        raise LeukolearnError("a fold's training pool is empty; lower --val-size or raise --folds")
    warnings.warn(f"training sizes {too_big} capped to the training pool ({pool} images)", stacklevel=3)
    return tuple(sorted({min(s, pool) for s in options.sizes}))


def job_seed(seed: int, fold: int, size: int, replicate: int) -> int:
    """The training seed of one job: depends on nothing but these four numbers."""
    return int(np.random.SeedSequence([seed, fold, size, replicate]).generate_state(1)[0])


def _fold_rng(options: ProtocolOptions, fold: int) -> np.random.Generator:
    # Separate stream per fold: fold f's split does not depend on how many folds are run.
    return np.random.default_rng([options.seed, fold])


def folds_to_run(options: ProtocolOptions) -> tuple[int, ...]:
    """The folds a plan holds: all, the first `run_folds`, or the ones it names."""
    if options.run_folds is None:
        return tuple(range(options.folds))
    if isinstance(options.run_folds, tuple):
        return options.run_folds
    return tuple(range(options.run_folds))


__all__ = [
    "ALL_SIZES", "AML_SIZES", "Job", "Plan", "ProtocolOptions", "PROTOCOLS", "all_plan",
    "aml_plan", "balanced_order", "default_options", "folds_to_run", "job_seed", "keep_classes",
    "make_plan", "stratified_partition",
]
