"""Images that decode but deserve a look, and one cell under two labels.

Warnings, one line per kind naming a few images and a count (never one line per image):
- tiny: the longer side is under 1/8 of the model input (32 px at 257, 50 px at 400).
  Beyond 8x, each source pixel becomes an 8x8 block of interpolation, nearly all that
  the network's first two conv-pool blocks see at once (10 px): the features they learn
  describe the interpolation, not the cell. The 103 px ALL-IDB2 copy, upscaled 2.5x to
  257, is well inside; a 1x1 px "image" (an export gone wrong) is not.
- elongated: one side over 3x the other. Padding to a square repeats edge pixels, so
  more than two thirds of the input would be smeared edge: a strip, not a cell crop.
  Real crops are near square (ALL-IDB2's most elongated is 78x103).
- several pages (multi-page TIFF, animated PNG): only page 0 is decoded, and the others
  may hold what was meant (another stain, a mask, a focus plane).
- near-duplicates under different labels (see `duplicates`): deduplication keeps the
  first image and so, silently, its label.

Errors (`LabelConflict`, raised by `load_dataset`, listed by `inspect_dataset`): one
cell under two labels. Same cell means identical files, or a perceptual hash distance of
0 with (near-)identical pixels at the model input: hash distance 0 alone is not enough,
because flat images (a blank frame, one colour) all hash alike whatever their colour.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from leukolearn.data.cache import file_digest
from leukolearn.data.loaders import Entry, LabelConflict
from leukolearn.errors import BadFileError

TINY_FRACTION = 8  # warn when an image is upscaled more than this factor
MAX_ASPECT = 3.0  # warn when one side is over this many times the other
SAME_PIXELS = 2.0  # mean absolute difference (of 255) below which two inputs are one image
NAMES_SHOWN = 3  # names listed in one warning line


class DataWarning(UserWarning):
    """A dataset loads, but some of its images deserve a look (one warning per kind)."""


def tiny_threshold(size: int) -> int:
    """The longer side, in px, below which an image counts as tiny at model input `size`."""
    return max(1, round(size / TINY_FRACTION))


def image_warnings(ids: Sequence[str], sizes: np.ndarray, pages: np.ndarray,
                   ok: np.ndarray, size: int) -> list[str]:
    """Warning lines about the images `ok` marks, from their (width, height) and pages."""
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    ok = np.asarray(ok, bool)
    longer, shorter = sizes.max(axis=1), sizes.min(axis=1)
    named = [f"{i} ({w}x{h})" for i, (w, h) in zip(ids, sizes.tolist())]
    out = []
    tiny = ok & (longer < tiny_threshold(size))
    if tiny.any():
        out.append(f"{_are(tiny.sum())} smaller than {tiny_threshold(size)} px, so upscaled "
                   f"more than {TINY_FRACTION}x to the {size} px input: the network sees "
                   f"mostly interpolation ({_names(named, tiny)})")
    elongated = ok & (longer > MAX_ASPECT * shorter)
    if elongated.any():
        out.append(f"{_are(elongated.sum())} more elongated than {MAX_ASPECT:g}:1, so padding "
                   "to a square fills most of the input with repeated edge pixels "
                   f"({_names(named, elongated)})")
    pages = np.asarray(pages)
    several = ok & (pages > 1)
    if several.any():
        counted = [f"{i} ({p} pages)" for i, p in zip(ids, pages.tolist())]
        n = int(several.sum())
        out.append(f"{n} image{'s' if n > 1 else ''} ha{'ve' if n > 1 else 's'} several pages "
                   "or frames (multi-page TIFF, animated PNG); only the first, page 0, is "
                   f"used ({_names(counted, several)})")
    return out


def review_duplicates(entries: Sequence[Entry], pairs: list[tuple[int, int, int]],
                      fitted: Callable[[int], np.ndarray | None], *,
                      dedupe: bool) -> tuple[list[LabelConflict], list[str]]:
    """The near-duplicate pairs under different labels: (label conflicts, warning lines).

    `fitted(i)` is image i at the model input (None: it no longer decodes); it is asked
    for only for pairs at hash distance 0 with different labels, which are rare.
    """
    conflicts, mixed = [], []
    for i, j, distance in pairs:
        a, b = entries[i], entries[j]
        if a.label == b.label:  # ALL-IDB2's near-copies: dropped on purpose (duplicates)
            continue
        why = _same_cell(a, b, fitted(i), fitted(j)) if distance == 0 else None
        if why is not None:
            conflicts.append(LabelConflict(a.path, a.label, b.path, b.label, why))
        else:
            mixed.append(f"{a.image_id} ({a.label}) ~ {b.image_id} ({b.label})")
    notes = []
    if mixed:
        n = len(mixed)
        fate = ("deduplication keeps the first of each, with its label" if dedupe
                else "both kept, in one group")
        notes.append(f"{n} near-duplicate pair{'s' if n > 1 else ''} ha{'ve' if n > 1 else 's'} "
                     f"different labels; {fate} ({_names(mixed, np.ones(n, bool))})")
    return conflicts, notes


def conflicts_error(conflicts: Sequence[LabelConflict]) -> BadFileError:
    """One error for all conflicts: the first, and how many more `inspect` would list."""
    first = conflicts[0].error()
    if len(conflicts) == 1:
        return first
    more = len(conflicts) - 1
    return BadFileError(first.path, f"{first.problem}; and {more} more label "
                                    f"conflict{'s' if more > 1 else ''} "
                                    "(`leukolearn inspect` lists them)")


def _same_cell(a: Entry, b: Entry, fa: np.ndarray | None,
               fb: np.ndarray | None) -> str | None:
    """How a and b (hash distance 0) are one cell, or None if their pixels differ."""
    if fa is None or fb is None:
        return None
    diff = float(np.abs(fa.astype(np.int16) - fb.astype(np.int16)).mean())
    if diff > SAME_PIXELS:  # flat images hash alike whatever their colour
        return None
    try:
        if file_digest(a.path) == file_digest(b.path):
            return "identical files"
    except BadFileError:  # it decoded a moment ago; without a digest, judge by pixels
        pass
    if diff == 0:
        return "identical pixels"
    return (f"perceptual hash distance 0, pixels {diff:.1f}/255 apart on average: "
            "a re-saved copy")


def _are(n: int | np.integer) -> str:
    return f"{int(n)} images are" if n > 1 else "1 image is"


def _names(names: Sequence[str], mask: np.ndarray) -> str:
    picked = [name for name, m in zip(names, mask) if m]
    shown = ", ".join(picked[:NAMES_SHOWN])
    rest = len(picked) - NAMES_SHOWN
    return shown + (f" and {rest} more" if rest > 0 else "")
