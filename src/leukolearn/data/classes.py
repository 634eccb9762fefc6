"""Which classes are the positive (blast) ones: decided here, for loading and for models.

- `DEFAULT_POSITIVE`: per dataset layout, the classes a binary task calls blasts when the
  user names none (`--positive`). Only aml-lmu needs one: its 15 cell types include
  myeloblasts and monoblasts, the paper's positive class. ALL-IDB2 and the synthetic
  cells already have a class named `BLAST`; a folder or manifest layout has no default.
- `default_positive` / `stored_positive`: those classes for a layout, and for a run as it
  was loaded (its recorded load options, else the layout's default).
- `positive_classes`: the indices of a trained model's positive classes, for scores and
  thresholds (several classes may be positive; a multiclass model needs them named).
- `blast_class`: the one class shown as "the blast" (rows of the explanation figures).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from leukolearn.errors import LeukolearnError

# The positive class's name after `CellImages.binary`, and ALL-IDB2's and the synthetic
# cells' own name for it.
BLAST = "blast"
# Names `blast_class` looks for (substrings, any case: "lymphoblast", "Blast").
BLAST_WORDS = (BLAST,)

AML_BLASTS = ("MYO", "MOB")  # myeloblasts and monoblasts, the paper's positive class
DEFAULT_POSITIVE: dict[str, tuple[str, ...]] = {"aml-lmu": AML_BLASTS}


def default_positive(layout: str) -> list[str] | None:
    """The positive classes of layout `layout`'s binary task when none are named."""
    names = DEFAULT_POSITIVE.get(layout)
    return list(names) if names else None


def stored_positive(layout: str, load_options: Mapping) -> list[str] | None:
    """The positive classes a run was loaded with (its `load_options` as the CLI recorded
    them: a comma-separated string, a list, or None for the layout's default), as `sweep`
    chose them; None for a multiclass run."""
    if load_options.get("multiclass"):
        return None
    positive = load_options.get("positive")
    if positive is None:
        positive = DEFAULT_POSITIVE.get(layout)
    if isinstance(positive, str):
        positive = [p.strip() for p in positive.split(",") if p.strip()]
    return list(positive) if positive else None


def positive_classes(class_names: Sequence[str], positive: Sequence[str] | None = None) -> list[int]:
    """Indices of the positive (blast) classes: those named, else `BLAST`, else class 1 of
    a binary model; a multiclass model without a `BLAST` class needs them named."""
    names = list(class_names)
    if positive:
        unknown = [p for p in positive if p not in names]
        if unknown:
            raise LeukolearnError(f"unknown class {unknown[0]!r}; the model's classes are "
                                  f"{', '.join(names)}")
        return [names.index(p) for p in positive]
    if BLAST in names:
        return [names.index(BLAST)]
    if len(names) == 2:
        return [1]
    raise LeukolearnError(f"which classes are blasts? name them with --positive "
                          f"(the model's classes: {', '.join(names)})")


def blast_class(class_names: Sequence[str]) -> int:
    """Index of the one class shown as the blast: the only one whose name contains a
    `BLAST_WORDS` word, else class 1 (class 0 of a one-class list).

    Looser than `positive_classes` on purpose: it picks a figure's example row, never a
    score, so "lymphoblast" among cell types is good enough and nothing is refused."""
    hits = [k for k, n in enumerate(class_names) if any(w in n.lower() for w in BLAST_WORDS)]
    return hits[0] if len(hits) == 1 else min(1, len(class_names) - 1)
