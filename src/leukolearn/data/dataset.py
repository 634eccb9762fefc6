"""Turning a dataset on disk into `CellImages`: list, decode (cached), deduplicate.

    from leukolearn.data.dataset import list_datasets, load_dataset, inspect_dataset
    cells = load_dataset("all-idb2", "data/ALL_IDB2/img")          # 257 px, duplicates dropped
    cells = load_dataset("aml-lmu", "data/AML", positive=["MYO", "MOB"])  # binary task
    report = inspect_dataset("folder", "data/PBC")                  # counts, sizes, problems

Loaders (one per layout, in `loaders`) only list files and labels; every layout then
shares the same decoding policy (`decode`), cache (`cache`), duplicate finder
(`duplicates`) and checks (`checks`): suspicious images are a `DataWarning` each kind,
one cell under two labels is an error.
"""
from __future__ import annotations

import inspect
import os
import warnings
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from leukolearn.data.cellimages import CellImages, DatasetSource, derive_fingerprint
from leukolearn.data import cache as cache_mod
from leukolearn.data.checks import DataWarning, conflicts_error, image_warnings, review_duplicates
from leukolearn.data.decode import (DECODE_POLICY_VERSION, count_pages, fit_mask_to_square,
                                    fit_to_square, read_image, read_mask)
from leukolearn.data.duplicates import (HASH_BITS, HASH_VERSION, duplicate_groups,
                                        duplicates_to_drop, find_duplicate_pairs,
                                        perceptual_hash)
from leukolearn.data.classes import negative_label, positive_label
from leukolearn.data.loaders import LOADERS, Entry, Listing
from leukolearn.data.parallel_decode import default_workers, ordered_map
from leukolearn.errors import BadFileError, LeukolearnError
from leukolearn.progress import track


_MASK_ASPECT_TOLERANCE = 0.03  # masks may be at another resolution, not another shape
_IN_FLIGHT = 64  # decoded entries waiting at most (at least 4 per CPU): RAM, not the dataset


def list_datasets() -> dict[str, str]:
    """Dataset layout name -> one-line description."""
    return {name: spec.description for name, spec in sorted(LOADERS.items())}


def load_dataset(name: str, root: str | Path, *, size: int | None = None,
                 positive: Sequence[str] | None = None, label_table: str | Path | None = None,
                 masks_dir: str | Path | None = None, allow_outside_root: bool = False,
                 dedupe: bool = True, cache: bool = True, progress: bool = True) -> CellImages:
    """Load dataset layout `name` from `root` (a folder; the CSV file for "manifest").

    size: model input size, default the layout's (all-idb2 257, aml-lmu 400, else 257).
    positive: class names forming the positive class; given, the result is binary
        ("other", "ig"), or ("other", "blast") for aml-lmu's default MYO,MOB (see
        `data.classes.positive_label`). Blast classes a layout knows but this copy lacks
        are skipped.
    label_table, masks_dir: ALL-IDB2 only (cell-type labels; expert masks).
    allow_outside_root: "manifest" only; lets paths leave the CSV's folder.
    dedupe: drop all but the first image of each near-duplicate group. Kept
        (dedupe=False), near-copies share a group id, for grouped splits.
    cache: reuse / store decoded arrays (see `leukolearn.data.cache`).

    Raises LeukolearnError for a bad option or an empty dataset, BadFileError naming the
    first file that cannot be used (nothing is cached then), and BadFileError naming both
    files of one cell under two labels (see `checks`). Tiny, elongated or multi-page
    images and near-duplicates under different labels load, with one `DataWarning` per
    kind.
    """
    listing, size = _list(name, root, size, label_table, masks_dir, allow_outside_root)
    if listing.bad:
        raise listing.bad[0]
    if listing.conflicts:
        raise conflicts_error(listing.conflicts)
    decoded = _decode(listing, size, cache=cache, progress=progress, keep_going=False)
    n = len(listing.entries)
    pairs = find_duplicate_pairs(decoded.hashes)
    conflicts, notes = review_duplicates(listing.entries, pairs,
                                         decoded.fitted_row(listing, size), dedupe=dedupe)
    if conflicts:
        raise conflicts_error(conflicts)
    for message in image_warnings([e.image_id for e in listing.entries], decoded.sizes,
                                  decoded.pages, decoded.ok, size) + notes:
        warnings.warn(message, DataWarning, stacklevel=2)
    keep = np.arange(n)
    if dedupe:
        keep = np.setdiff1d(keep, duplicates_to_drop(n, pairs))
    entries = [listing.entries[i] for i in keep]
    groups = None
    if any(e.group is not None for e in entries):
        groups = np.array([e.group for e in entries], dtype=str)
    elif not dedupe and pairs:
        rep = duplicate_groups(n, pairs)
        groups = np.array([listing.entries[r].image_id for r in rep], dtype=str)
    labels = np.array([listing.class_names.index(e.label) for e in entries], dtype=np.int64)
    ids = tuple(e.image_id for e in entries)
    # With a cache entry, the files' content hashes already fingerprint the pixels: hashing
    # gigabytes of decoded arrays again would dominate a second load. The masks are left
    # out: training never reads them, so a run made without --masks is the same run when
    # `focus` or `shortcut` later loads its images with them.
    fingerprint = "" if decoded.pixels_key is None else derive_fingerprint(
        decoded.pixels_key, keep.tobytes(), labels.tobytes(), ids, listing.class_names,
        None if groups is None else groups.tolist())
    cells = CellImages(
        images=decoded.rows("images", keep), labels=labels, class_names=listing.class_names,
        image_ids=ids, masks=decoded.rows("masks", keep) if decoded.masks is not None else None,
        groups=groups, fingerprint=fingerprint,
    )
    if positive is not None:
        # Named from the classes asked for, not those present: every copy of a dataset
        # names its task alike (aml-lmu's default MYO,MOB is "blast" without MOB too).
        cells = cells.binary(_present_positive(positive, listing),
                             positive_label(name, positive))
    return replace(cells, source=DatasetSource(
        name=name, root=str(Path(root).resolve()), load_options={
            "size": size, "positive": ",".join(positive) if positive is not None else None,
            "multiclass": positive is None,
            "label_table": str(label_table) if label_table else None, "dedupe": dedupe,
            # only when given, so that the options of every other load stay as they were
            **({"allow_outside_root": True} if allow_outside_root else {})}))


def inspect_dataset(name: str, root: str | Path, *, size: int | None = None,
                    positive: Sequence[str] | None = None,
                    label_table: str | Path | None = None, masks_dir: str | Path | None = None,
                    allow_outside_root: bool = False, dedupe: bool = True, cache: bool = True,
                    progress: bool = True) -> dict:
    """What `load_dataset` would see, as a JSON-serialisable dict; bad files
    (`bad_files`), label conflicts (`label_conflicts`) and the warnings `load_dataset`
    would give (`warnings`) are listed instead of stopping or warning. Options as for
    `load_dataset`."""
    listing, size = _list(name, root, size, label_table, masks_dir, allow_outside_root)
    decoded = _decode(listing, size, cache=cache, progress=progress, keep_going=True)
    entries, ok = listing.entries, decoded.ok
    pairs = find_duplicate_pairs(decoded.hashes, valid=ok)
    conflicts, notes = review_duplicates(entries, pairs, decoded.fitted_row(listing, size),
                                         dedupe=dedupe)
    dropped = duplicates_to_drop(len(entries), pairs) if dedupe else np.array([], np.int64)
    labels = Counter(e.label for e, good in zip(entries, ok) if good)
    sizes = Counter(f"{w}x{h}" for (w, h), good in zip(decoded.sizes.tolist(), ok) if good)
    report = {
        "dataset": name,
        "root": str(Path(root)),
        "size": size,
        "n_images": int(ok.sum()),
        "class_counts": {c: labels[c] for c in listing.class_names},
        "image_sizes": dict(sizes.most_common()),
        "duplicate_pairs": [[entries[i].image_id, entries[j].image_id, d] for i, j, d in pairs],
        "dropped_duplicates": [entries[i].image_id for i in dropped],
        "n_after_dedupe": int(ok.sum()) - len(dropped),
        "bad_files": [{"path": str(e.path), "problem": e.problem}
                      for e in listing.bad + decoded.bad],
        "label_conflicts": [c.as_dict() for c in listing.conflicts + conflicts],
        "warnings": image_warnings([e.image_id for e in entries], decoded.sizes,
                                   decoded.pages, ok, size) + notes,
    }
    if positive is not None:
        chosen = _present_positive(positive, listing)
        n_pos = sum(labels[c] for c in chosen)
        label = positive_label(name, positive)  # as load_dataset names the binary task
        report["binary_counts"] = {negative_label(label): report["n_images"] - n_pos, label: n_pos}
    return report


def _list(name: str, root: str | Path, size: int | None, label_table: str | Path | None,
          masks_dir: str | Path | None, allow_outside_root: bool) -> tuple[Listing, int]:
    """Find the loader, check the options apply to it, and list the dataset."""
    spec = LOADERS.get(name)
    if spec is None:
        raise LeukolearnError(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 1):
        raise LeukolearnError(f"size must be a positive number of pixels, got {size!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise LeukolearnError(f"{root} does not exist")
    options = {"label_table": label_table, "masks_dir": masks_dir,
               "allow_outside_root": allow_outside_root}
    options = {k: v for k, v in options.items() if v not in (None, False)}
    accepted = inspect.signature(spec.fn).parameters
    for option in options:
        if option not in accepted:
            raise LeukolearnError(f"option {option} does not apply to dataset {name!r}")
    listing = spec.fn(root, **{k: Path(v) if k != "allow_outside_root" else v
                               for k, v in options.items()})
    _move_duplicate_ids_to_bad(listing)
    if not listing.entries and not listing.bad:
        raise LeukolearnError(f"no images found in {root}")
    return listing, int(size or spec.default_size)


def _move_duplicate_ids_to_bad(listing: Listing) -> None:
    """Two files with one image id (Im001_1.jpg and Im001_1.tif; one name in two AML class
    folders): the second is a bad file naming the first, instead of an error without names."""
    first: dict[str, Path] = {}
    kept = []
    for entry in listing.entries:
        if entry.image_id in first:
            listing.bad.append(BadFileError(
                entry.path, f"same image id {entry.image_id!r} as {first[entry.image_id]} "
                            "(image ids must be unique: rename or remove one)"))
        else:
            first[entry.image_id] = entry.path
            kept.append(entry)
    listing.entries = kept


def _present_positive(positive: Sequence[str], listing: Listing) -> tuple[str, ...]:
    """The positive classes present in this copy; known but absent ones are skipped."""
    names = (positive,) if isinstance(positive, str) else tuple(positive)
    known = listing.known_classes or listing.class_names
    unknown = [p for p in names if p not in known and p not in listing.class_names]
    if unknown:  # a typo, or a class of another dataset: never silently zero blasts
        raise LeukolearnError(f"positive class {unknown[0]!r} is not among the classes "
                              f"{list(listing.class_names)}")
    chosen = tuple(p for p in names if p in listing.class_names or p not in known)
    if not chosen:
        raise LeukolearnError(f"none of the positive classes {list(names)} has images here "
                              f"(classes: {list(listing.class_names)})")
    return chosen


@dataclass
class _Decoded:
    """Arrays for every listed entry, in listing order."""
    images: np.ndarray | None  # (N, S, S, 3) uint8; None when inspect met bad files
    masks: np.ndarray | None  # (N, S, S) uint8 region codes
    sizes: np.ndarray  # (N, 2) original width, height
    hashes: np.ndarray  # (N, HASH_BITS) bool perceptual hashes of the originals
    pages: np.ndarray  # (N,) pages or frames in each file (page 0 is decoded)
    ok: np.ndarray  # (N,) bool: decoded without error
    bad: list[BadFileError]
    key: str | None = None  # cache entry holding the arrays
    pixels_key: str | None = None  # like key, but of the images alone (no masks)

    def fitted_row(self, listing: Listing, size: int) -> Callable[[int], np.ndarray | None]:
        """i -> image i at the model input: a row of `images`, or decoded again where
        inspect kept no images (bad files; None if it no longer decodes). Asked for the
        images of a few duplicate pairs only."""
        def fitted(i: int) -> np.ndarray | None:
            if self.images is not None:
                return np.asarray(self.images[i])
            result = _decode_one(listing.entries[i], size)
            return None if isinstance(result, BadFileError) else result[0]
        return fitted

    def rows(self, name: str, index: np.ndarray) -> np.ndarray:
        """Rows of images or masks, kept memory-mapped when the arrays are cached."""
        array = getattr(self, name)
        if len(index) == len(array):
            return array
        if self.key is not None:
            return cache_mod.entry_rows(self.key, name, index)
        return array[index]


def _decode(listing: Listing, size: int, *, cache: bool, progress: bool,
            keep_going: bool) -> _Decoded:
    """Decode every entry at `size`, from the cache when it holds them.

    keep_going: record bad files and go on (inspect) instead of raising the first.
    """
    entries = listing.entries
    n, with_masks = len(entries), any(e.mask_path is not None for e in entries)
    key, pixels_key = _cache_keys(listing, size, keep_going, progress) if cache else (None, None)
    if key is not None and (hit := cache_mod.lookup(key)) is not None:
        pages = hit["pages"] if "pages" in hit else _backfill_pages(key, entries)
        return _Decoded(hit["images"], hit.get("masks"), hit["sizes"], hit["hashes"], pages,
                        np.ones(n, bool), [], key, pixels_key)
    specs = {"images": ((n, size, size, 3), np.uint8), "sizes": ((n, 2), np.int32),
             "hashes": ((n, HASH_BITS), np.bool_), "pages": ((n,), np.int32)}
    if with_masks:
        specs["masks"] = ((n, size, size), np.uint8)
    writer = cache_mod.EntryWriter(key, specs) if key is not None else None
    with writer or nullcontext():
        arrays = writer.arrays if writer else {k: np.zeros(s, d) for k, (s, d) in specs.items()}
        ok, bad = np.zeros(n, bool), []
        for i, result in track(enumerate(_decode_each(entries, size)), f"Decoding {n} images",
                               total=n, enabled=progress):
            if isinstance(result, BadFileError):
                if not keep_going:
                    raise result
                bad.append(result)
                continue
            (arrays["images"][i], arrays["sizes"][i], arrays["hashes"][i], arrays["pages"][i],
             mask) = result
            if mask is not None:
                arrays["masks"][i] = mask
            ok[i] = True
        if writer is not None and not bad:
            arrays, key = writer.commit(), writer.key
        elif writer is not None:  # inspect with bad files: keep the small arrays only
            arrays = {k: np.array(arrays[k]) for k in ("sizes", "hashes", "pages")}
            key = pixels_key = None
    return _Decoded(arrays.get("images"), arrays.get("masks"), arrays["sizes"],
                    arrays["hashes"], arrays["pages"], ok, bad, key, pixels_key)


def _backfill_pages(key: str, entries: list[Entry]) -> np.ndarray:
    """Page counts for a cache entry written before they were stored (older versions), from the
    files' headers, then added to the entry. Not a new decode policy version: that would
    change the fingerprint of every existing run."""
    pages = np.array([count_pages(e.path) for e in entries], dtype=np.int32)
    target = cache_mod.cache_root() / "arrays" / key / "pages.npy"
    # Own temporary name (pid), not matching *.npy, as cache.entry_rows does: two loads
    # may backfill the same entry at once, and lookup() must never see a half file.
    tmp = target.with_name(f".pages.npy.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, pages)
        os.replace(tmp, target)
    except OSError:  # a read-only cache still loads; the count is made again next time
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return pages


def _cache_keys(listing: Listing, size: int, keep_going: bool,
                progress: bool) -> tuple[str | None, str | None]:
    """(the cache entry for this listing, a key of its images alone); (None, None), no
    caching, if inspect meets an unreadable file, which the decoding loop then reports."""
    entries = listing.entries
    try:
        pairs = [(cache_mod.file_digest(e.path),
                  cache_mod.file_digest(e.mask_path) if e.mask_path else "")
                 for e in track(entries, "Checking the cache", enabled=progress)]
    except BadFileError:
        if keep_going:
            return None, None
        raise
    settings = (size, DECODE_POLICY_VERSION, HASH_VERSION)
    # Without masks the two keys are equal, as the one key was before masks were left out
    # of the fingerprint: the fingerprints of existing runs made without masks still hold.
    return (cache_mod.content_key([image + mask for image, mask in pairs], *settings),
            cache_mod.content_key([image for image, _ in pairs], *settings))


def _decode_each(entries: list[Entry], size: int) -> Iterator:
    """Decoded entries in order, on every CPU this process may use (`ordered_map`, the one
    parallel decoder); a bad file is yielded as its BadFileError. Results wait in RAM only
    until written, never a whole dataset."""
    workers = default_workers()
    return ordered_map(partial(_decode_one, size=size), entries, workers=workers,
                       in_flight=max(_IN_FLIGHT, 4 * workers))


def _decode_one(entry: Entry, size: int):
    """(fitted image, (width, height), hash, pages, fitted mask or None), or the
    BadFileError."""
    try:
        img, pages = read_image(entry.path), count_pages(entry.path)
        mask = None if entry.mask_path is None else _fitted_mask(entry.mask_path, img.shape, size)
        return (fit_to_square(img, size), (img.shape[1], img.shape[0]), perceptual_hash(img),
                pages, mask)
    except BadFileError as e:
        return e


def _fitted_mask(path: Path, image_shape: tuple[int, ...], size: int) -> np.ndarray:
    mask = read_mask(path)
    (h, w), (mh, mw) = image_shape[:2], mask.shape
    if abs(h / max(h, w) - mh / max(mh, mw)) + abs(w / max(h, w) - mw / max(mh, mw)) \
            > _MASK_ASPECT_TOLERANCE:
        raise BadFileError(path, f"mask is {mw}x{mh} but its image is {w}x{h} (another shape)")
    return fit_mask_to_square(mask, size)

