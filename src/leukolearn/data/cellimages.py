"""`CellImages`: the one container every dataset is turned into.

Loaders build it; protocols, training and analysis only read it. Images are uint8
(N, H, W, 3) already at the model's input size, so nothing downstream decodes or
resizes again. The array may be a `numpy.memmap` (see `data.cache`) so a dataset larger
than RAM still works.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from leukolearn.data.classes import JOIN, negative_label
from leukolearn.errors import LeukolearnError


@dataclass(frozen=True)
class DatasetSource:
    """Where a CellImages was loaded from, in the words a run records (dataset.json) so
    that `explain`, `embed` and `focus` can load the same images again."""

    name: str  # the layout, e.g. "all-idb2"
    root: str  # its folder (or manifest), absolute
    # size, positive ("MYO,MOB" or None), multiclass, label_table, dedupe: as the CLI records
    load_options: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class CellImages:
    images: np.ndarray  # (N, H, W, 3) uint8, H == W == model input size
    labels: np.ndarray  # (N,) int64, indices into class_names
    class_names: tuple[str, ...]
    image_ids: tuple[str, ...]  # unique, stable ids (file stem or relative path)
    masks: np.ndarray | None = None  # (N, H, W) uint8 region codes, see MASK_* below
    groups: np.ndarray | None = None  # (N,) str: patient / source photo, for grouped splits
    # Content hash. Empty: computed from the arrays. Loaders derive it from the hashes of
    # the files instead, and subset() / binary() from their parent's (see derive_fingerprint).
    fingerprint: str = field(default="")
    # Set by `load_dataset`; None for arrays made in memory and for subsets, which the
    # source alone cannot load again. Not part of the fingerprint.
    source: DatasetSource | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise LeukolearnError(
                f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
            )
        if self.images.shape[1] != self.images.shape[2]:
            raise LeukolearnError(f"images must be square, got {self.images.shape[1:3]}")
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "image_ids", tuple(self.image_ids))
        if len(self.labels) != n or len(self.image_ids) != n:
            raise LeukolearnError(
                f"{n} images but {len(self.labels)} labels and {len(self.image_ids)} ids"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise LeukolearnError("a label is outside the list of class names")
        if len(set(self.image_ids)) != n:
            dup = _first_duplicate(self.image_ids)
            raise LeukolearnError(f"duplicate image id {dup!r}")
        if self.masks is not None and self.masks.shape != self.images.shape[:3]:
            raise LeukolearnError(f"masks {self.masks.shape} do not match images {self.images.shape}")
        if self.groups is not None and len(self.groups) != n:
            raise LeukolearnError(f"{len(self.groups)} group ids for {n} images")
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", content_fingerprint(self))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """Model input size (images are size x size)."""
        return int(self.images.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.n_classes)
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def subset(self, index: Sequence[int] | np.ndarray) -> "CellImages":
        """The images at `index`, in that order (classes and names kept)."""
        index = np.asarray(index, dtype=np.int64)
        return CellImages(
            fingerprint=derive_fingerprint(self.fingerprint, "subset", index.tobytes()),
            images=self.images[index],
            labels=self.labels[index],
            class_names=self.class_names,
            image_ids=tuple(self.image_ids[i] for i in index),
            masks=None if self.masks is None else self.masks[index],
            groups=None if self.groups is None else self.groups[index],
        )

    def binary(self, positive: Sequence[str], positive_name: str | None = None,
               negative_name: str | None = None) -> "CellImages":
        """Relabel to two classes: 1 for any class in `positive`, 0 for the rest.

        Named (negative_name, positive_name); by default the positive class keeps the name
        it was given ("ig"; several: "MYO+MOB", see `data.classes.positive_label`) and the
        rest is "other"."""
        positive = [positive] if isinstance(positive, str) else list(positive)
        unknown = [p for p in positive if p not in self.class_names]
        if unknown:
            raise LeukolearnError(
                f"positive class {unknown[0]!r} is not among the classes {list(self.class_names)}"
            )
        if positive_name is None:
            positive_name = JOIN.join(positive)
        if negative_name is None:
            negative_name = negative_label(positive_name)
        if positive_name == negative_name:
            raise LeukolearnError(f"the two classes of a binary task need two names, got "
                                  f"{positive_name!r} twice")
        positive_ids = [self.class_names.index(p) for p in positive]
        labels = np.isin(self.labels, positive_ids).astype(np.int64)
        return CellImages(
            # The names hashed are the fixed ("other", "blast") that every binary task had
            # before its classes kept their own names, not the names given: a run records
            # its dataset's fingerprint and resumes only on the same one, and a run made
            # with `--positive ig` then must still resume now that its classes are called
            # ("other", "ig"). The names change nothing a job computes; the labels do, and
            # they are hashed.
            fingerprint=derive_fingerprint(self.fingerprint, "binary", labels.tobytes(),
                                           _FINGERPRINT_NAMES[0], _FINGERPRINT_NAMES[1]),
            images=self.images, labels=labels, class_names=(negative_name, positive_name),
            image_ids=self.image_ids, masks=self.masks, groups=self.groups, source=self.source,
        )


# The class names `binary` hashes into the fingerprint, whatever it names the classes (see
# `CellImages.binary`): those of every binary task of earlier versions. Literals, not
# NEGATIVE and BLAST: renaming those must not change the fingerprint of any run.
_FINGERPRINT_NAMES = ("other", "blast")


# Region codes in `CellImages.masks` (expert masks of ALL-IDB2, or a stain segmentation).
MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS = 0, 1, 2


def content_fingerprint(cells: CellImages) -> str:
    """A short hash of everything that defines the dataset: pixels, labels, names, ids.

    Hashed in chunks so a memory-mapped dataset is never loaded whole.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((cells.images.shape, cells.class_names, cells.image_ids)).encode())
    h.update(np.ascontiguousarray(cells.labels).tobytes())
    for start in range(0, len(cells.images), 256):
        h.update(np.ascontiguousarray(cells.images[start:start + 256]).tobytes())
    return h.hexdigest()


def derive_fingerprint(parent: str, *parts: object) -> str:
    """The fingerprint of a dataset made from another by a known change (a subset, new
    labels): cheap, where hashing the pixels again would cost a minute on 18,000 images."""
    h = hashlib.blake2b(digest_size=16)
    h.update(parent.encode())
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
    return h.hexdigest()


def _first_duplicate(items: Sequence[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return ""
