"""Which classes are the positive (blast) ones: decided here, for loading and for models.

- `DEFAULT_POSITIVE`: per dataset layout, the classes a binary task calls blasts when the
  user names none (`--positive`). Only aml-lmu needs one: its 15 cell types include
  myeloblasts and monoblasts, the paper's positive class. ALL-IDB2 and the synthetic
  cells already have a class named `BLAST`; a folder or manifest layout has no default.
- `default_positive` / `stored_positive`: those classes for a layout, and for a run as it
  was loaded (its recorded load options, else the layout's default).
- `positive_label` / `negative_label`: the two class names of a binary task
  (`CellImages.binary`): the positive class as the user named it ("ig"; several joined,
  "MYO+MOB"), `BLAST` for a layout's own default (aml-lmu's MYO,MOB are the paper's
  blasts), and `NEGATIVE` ("other") for the rest. Earlier versions named every binary
  task ("other", "blast"); their models and runs keep those names and work as before.
- `positive_classes`: the indices of a trained model's positive classes, for scores and
  thresholds (several classes may be positive; a multiclass model needs them named, and so
  does a two-class model that does not say which of its classes is positive).
- `blast_class`: the one class shown as "the blast" (rows of the explanation figures).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from leukolearn.errors import LeukolearnError

# The paper's positive class: ALL-IDB2's and the synthetic cells' own name for it, the name
# of a layout's default positive classes after `CellImages.binary`, and the name earlier
# versions gave every positive class (which `CellImages.binary`'s fingerprint still uses).
BLAST = "blast"
# The name `CellImages.binary` gives the negative class (all classes not named positive).
NEGATIVE = "other"
# ... and instead, when the positive class itself is called "other" (`--positive other`).
NEGATIVE_ALT = "rest"
# Several positive classes make one class named "MYO+MOB".
JOIN = "+"
# ModelConfig.extra key under which a model may record its positive classes (a list).
POSITIVE_KEY = "positive"
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


def positive_label(layout: str, positive: str | Sequence[str]) -> str:
    """The name of the positive class of the binary task that makes `positive` (class names
    of layout `layout`) positive: `BLAST` when they are the layout's default positive
    classes (in any order), else the names as given, joined by `JOIN`."""
    names = [positive] if isinstance(positive, str) else list(positive)
    default = DEFAULT_POSITIVE.get(layout)
    if default and sorted(names) == sorted(default):
        return BLAST
    return JOIN.join(names)


def negative_label(positive_name: str) -> str:
    """The name of the negative class beside a positive class named `positive_name`."""
    return NEGATIVE_ALT if positive_name == NEGATIVE else NEGATIVE


def binary_positive(class_names: Sequence[str]) -> int | None:
    """Index of the positive class when `class_names` are those of a binary task as
    `CellImages.binary` names them (class 0 the negative, class 1 the positive), else None.

    A folder with exactly the classes "other" and one sorted after it reads the same; the
    one class that is not "other" is then the positive one, which is what such a folder
    is almost always meant to say."""
    names = list(class_names)
    if len(names) == 2 and names[0] == negative_label(names[1]):
        return 1
    return None


def positive_classes(class_names: Sequence[str], positive: Sequence[str] | None = None,
                     stored: Sequence[str] | None = None) -> list[int]:
    """Indices of the positive (blast) classes, first that applies: those named
    (`--positive`); those a model records (`stored`: its ModelConfig.extra[POSITIVE_KEY]);
    `BLAST`; class 1 of a binary task named by `CellImages.binary` ("other", "ig").

    Anything else is refused, never guessed: a two-class model of lymphocytes and
    neutrophils has no positive class, and taking class 1 would count lymphocytes as
    blasts. A multiclass model without a `BLAST` class needs them named too."""
    names = list(class_names)
    for given, source in ((positive, "--positive"), (stored, "the model file")):
        if given:
            given = [given] if isinstance(given, str) else list(given)
            unknown = [p for p in given if p not in names]
            if unknown:
                raise LeukolearnError(f"unknown class {unknown[0]!r} (from {source}); the "
                                      f"model's classes are {', '.join(names)}")
            return [names.index(p) for p in given]
    if BLAST in names:
        return [names.index(BLAST)]
    if (index := binary_positive(names)) is not None:
        return [index]
    raise LeukolearnError(f"which class is positive? the model's classes are "
                          f"{', '.join(names)}; name it with --positive CLASS")


def blast_class(class_names: Sequence[str]) -> int:
    """Index of the one class shown as the blast: the only one whose name contains a
    `BLAST_WORDS` word, else class 1 (class 0 of a one-class list).

    Looser than `positive_classes` on purpose: it picks a figure's example row, never a
    score, so "lymphoblast" among cell types is good enough and nothing is refused."""
    hits = [k for k, n in enumerate(class_names) if any(w in n.lower() for w in BLAST_WORDS)]
    return hits[0] if len(hits) == 1 else min(1, len(class_names) - 1)
