"""One loader per dataset layout, registered by name.

A loader only *lists* a dataset: which files, with which image ids, labels, groups and
masks. Decoding, caching and duplicate finding are the same for every layout and live
in `leukolearn.data`. A loader records a file it cannot use (wrong name, unknown type,
missing) in `Listing.bad` instead of raising, so `inspect_dataset` can report them all;
a mistake in the user's options (an unknown class folder, a bad label table) raises.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from leukolearn.data.classes import AML_BLASTS
from leukolearn.errors import BadFileError, LeukolearnError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
# Files that sit beside images in real dataset folders and are not images.
SIDECAR_EXTENSIONS = {".txt", ".csv", ".tsv", ".md", ".json", ".xlsx", ".xls", ".pdf"}
SIDECAR_NAMES = {"thumbs.db", "desktop.ini", "license", "licence", "readme"}

AML_CLASSES = ("BAS", "EBO", "EOS", "KSC", "LYA", "LYT", "MMZ", "MOB", "MON", "MYB", "MYO",
               "NGB", "NGS", "PMB", "PMO")


@dataclass(frozen=True)
class Entry:
    """One image of a dataset, before decoding."""
    path: Path
    image_id: str
    label: str
    group: str | None = None
    mask_path: Path | None = None


@dataclass(frozen=True)
class LabelConflict:
    """One cell under two labels: both files, their labels, and how they were matched
    (`why`, e.g. "identical files"). Training on it teaches the network noise, and dropping
    one copy as a duplicate would pick a label silently, so it is an error."""
    first: Path
    first_label: str
    second: Path
    second_label: str
    why: str

    def error(self) -> BadFileError:
        return BadFileError(self.second, f"same cell as {self.first} ({self.why}), but "
                                         f"labelled {self.second_label!r} here and "
                                         f"{self.first_label!r} there (one cell, one label: "
                                         "remove the wrong copy)")

    def as_dict(self) -> dict:
        return {"paths": [str(self.first), str(self.second)],
                "labels": [self.first_label, self.second_label], "problem": self.error().problem}


@dataclass
class Listing:
    """What a loader found: images in order, class names (label order), bad files, and
    label conflicts the names alone reveal (decoding finds the others)."""
    entries: list[Entry]
    class_names: tuple[str, ...]
    bad: list[BadFileError] = field(default_factory=list)
    known_classes: tuple[str, ...] = ()  # classes the layout defines, present or not
    conflicts: list[LabelConflict] = field(default_factory=list)


@dataclass(frozen=True)
class LoaderSpec:
    name: str
    description: str
    default_size: int
    fn: Callable[..., Listing]


LOADERS: dict[str, LoaderSpec] = {}


def register_loader(name: str, description: str, default_size: int):
    """Decorator: make `fn(root, **options) -> Listing` loadable as dataset `name`."""
    def wrap(fn: Callable[..., Listing]) -> Callable[..., Listing]:
        LOADERS[name] = LoaderSpec(name, description, default_size, fn)
        return fn
    return wrap


def is_ignored(path: Path) -> bool:
    """Hidden files and non-image sidecars (Thumbs.db, notes, tables) in image folders."""
    name = path.name.lower()
    return (name.startswith(".") or path.suffix.lower() in SIDECAR_EXTENSIONS
            or name in SIDECAR_NAMES or path.stem.lower() in SIDECAR_NAMES)


def image_files(folder: Path, bad: list[BadFileError], recursive: bool = False) -> list[Path]:
    """Image files in `folder`, sorted; other non-ignored files are appended to `bad`."""
    found = []
    children = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(children):
        if path.is_dir() or is_ignored(path) or any(
                part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            found.append(path)
        else:
            bad.append(BadFileError(path, "not an image type leukolearn reads "
                                          f"({', '.join(sorted(IMAGE_EXTENSIONS))})"))
    return found


def as_text(name: str) -> str:
    """A file name as valid text. Python keeps the bytes of a name that is not UTF-8 as lone
    surrogates, which SQLite and UTF-8 text files refuse; they become \\xNN escapes here."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _require_dir(folder: Path) -> None:
    if not folder.is_dir():
        raise LeukolearnError(f"{folder} is not a folder")


def class_folders(root: Path) -> list[Path]:
    _require_dir(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# --- ALL-IDB2 ----------------------------------------------------------------------------

_ALL_IDB2_NAME = re.compile(r"^Im(\d+)_([01])$", re.IGNORECASE)
_ALL_IDB2_ID = re.compile(r"^im0*(\d+)", re.IGNORECASE)  # Im001_1.tif, Im001, im1 -> "1"


@register_loader("all-idb2", "ALL-IDB2 single-cell crops ImNNN_L (L=1 blast, 0 healthy)", 257)
def list_all_idb2(root: Path, label_table: Path | None = None,
                  masks_dir: Path | None = None) -> Listing:
    """ALL-IDB2: files `ImNNN_L.<ext>` in one folder; blast if L is 1.

    `label_table` (CSV or XLSX with an image id and a cell type column) replaces the
    binary labels by cell types; `masks_dir` adds the expert masks (`ImNNN_L.tif`).
    """
    _require_dir(root)
    if masks_dir is not None:
        _require_dir(Path(masks_dir))
    bad: list[BadFileError] = []
    entries, conflicts, missing_masks = [], [], []
    by_number: dict[int, Entry] = {}  # ImNNN -> its first file
    for path in image_files(root, bad):
        match = _ALL_IDB2_NAME.match(path.stem)
        if match is None:
            bad.append(BadFileError(path, "not named like ALL-IDB2 (ImNNN_L, L = 0 or 1)"))
            continue
        label = "blast" if match.group(2) == "1" else "healthy"
        mask = _find_mask(Path(masks_dir), path.stem) if masks_dir else None
        if masks_dir and mask is None:
            missing_masks.append(f"{path.stem}.tif")
        entry = Entry(path, as_text(path.stem), label, mask_path=mask)
        entries.append(entry)
        # ALL-IDB2 numbers each cell once; Im001_0 beside Im001_1 is one cell under both
        # labels (Im001_1.jpg beside Im001_1.tif is one id twice, a bad file found later).
        first = by_number.setdefault(int(match.group(1)), entry)
        if first.label != label:
            conflicts.append(LabelConflict(first.path, first.label, path, label,
                                           f"same ALL-IDB2 image number {match.group(1)}"))
    if missing_masks:
        # One line, not one per image: a wrong --masks folder misses them all.
        shown = ", ".join(missing_masks[:3]) + (", ..." if len(missing_masks) > 3 else "")
        bad.append(BadFileError(masks_dir, f"no mask for {len(missing_masks)} of "
                                           f"{len(entries)} images in this folder (first "
                                           f"missing: {shown}); a mask is named like its "
                                           "image, ending .tif, .tiff or .png"))
    if label_table is None:
        return Listing(entries, ("healthy", "blast"), bad, conflicts=conflicts)
    # The table is keyed by image number: each number's first file stands for it, so a
    # number under both labels stays a listed conflict, not a missing table row.
    number = {e.image_id: int(_ALL_IDB2_ID.match(e.image_id).group(1))  # type: ignore[union-attr]
              for e in entries}
    firsts: dict[int, str] = {}
    for e in entries:
        firsts.setdefault(number[e.image_id], e.image_id)
    cell_types = _read_label_table(Path(label_table), list(firsts.values()))
    entries = [Entry(e.path, e.image_id, cell_types[firsts[number[e.image_id]]],
                     mask_path=e.mask_path) for e in entries]
    return Listing(entries, tuple(sorted(set(cell_types.values()))), bad, conflicts=conflicts)


def _find_mask(masks_dir: Path, stem: str) -> Path | None:
    for ext in (".tif", ".tiff", ".png"):
        if (masks_dir / f"{stem}{ext}").is_file():
            return masks_dir / f"{stem}{ext}"
    return None


_ID_COLUMNS = ("image id", "image_id", "image", "id", "file", "filename")
_TYPE_COLUMNS = ("cell type", "cell_type", "celltype", "type", "label", "class")


def _read_label_table(table: Path, image_ids: list[str]) -> dict[str, str]:
    """image id -> cell type, checked to cover exactly the images in the folder."""
    rows = _table_rows(table)
    if not rows:
        raise LeukolearnError(f"label table {table} is empty")
    header = [str(h).strip().lower() if h is not None else "" for h in rows[0]]
    id_col = next((header.index(c) for c in _ID_COLUMNS if c in header), None)
    type_col = next((header.index(c) for c in _TYPE_COLUMNS if c in header), None)
    if id_col is None or type_col is None:
        raise LeukolearnError(f"label table {table} needs an image id and a cell type column "
                              f"(found {rows[0]})")
    by_number = {_ALL_IDB2_ID.match(i).group(1): i for i in image_ids}  # type: ignore[union-attr]
    types: dict[str, str] = {}
    for k, row in enumerate(rows[1:], start=2):
        if all(v in (None, "") for v in row):
            continue
        row = list(row) + [None] * (len(header) - len(row))  # a short row: missing cells
        raw_id = str(row[id_col] if row[id_col] is not None else "").strip()
        cell_type = str(row[type_col] if row[type_col] is not None else "").strip()
        match = _ALL_IDB2_ID.match(raw_id)
        image_id = by_number.get(match.group(1)) if match else None
        if image_id is None:
            raise LeukolearnError(f"label table {table}, row {k}: "
                                  f"no image {raw_id!r} in the folder")
        if not cell_type:
            raise LeukolearnError(f"label table {table}, row {k}: no cell type for {raw_id!r}")
        if image_id in types:
            raise LeukolearnError(f"label table {table}, row {k}: {raw_id!r} appears twice")
        types[image_id] = cell_type
    missing = [i for i in image_ids if i not in types]
    if missing:
        raise LeukolearnError(f"label table {table} has no row for {len(missing)} image(s): "
                              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return types


def _table_rows(table: Path) -> list[list]:
    if not table.is_file():
        raise LeukolearnError(f"label table {table} does not exist")
    if table.suffix.lower() in (".xlsx", ".xlsm"):
        import openpyxl  # only needed for Excel tables

        try:
            book = openpyxl.load_workbook(table, read_only=True, data_only=True)
        except Exception as e:  # openpyxl raises many types on a bad file
            raise BadFileError(table, f"not a readable Excel file ({type(e).__name__})") from None
        try:
            return [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
        finally:
            book.close()
    try:
        with open(table, newline="", encoding="utf-8-sig") as f:
            return [row for row in csv.reader(f)]
    except UnicodeDecodeError as e:
        raise BadFileError(table, f"not UTF-8 text (byte {e.start}); save the table as a "
                                  "UTF-8 CSV or as XLSX") from None
    except csv.Error as e:
        raise BadFileError(table, f"not a readable CSV ({e})") from None


# --- AML-Cytomorphology_LMU --------------------------------------------------------------

@register_loader("aml-lmu", "AML-Cytomorphology_LMU: 15 class folders of 400x400 TIFFs "
                            f"(blasts: {', '.join(AML_BLASTS)})", 400)
def list_aml_lmu(root: Path) -> Listing:
    """AML-Cytomorphology_LMU: one folder per class, named by the dataset's codes.

    Any of the 15 folders may be missing (samples, subsets); the class names are the
    folders present, sorted, so a multiclass model never has a class without images.
    `Listing.known_classes` keeps all 15, so a binary task naming an absent blast class
    (MOB in a sample) still works.
    """
    folders = class_folders(root)
    unknown = [f.name for f in folders if f.name not in AML_CLASSES]
    if unknown:
        raise LeukolearnError(f"{root / unknown[0]}: not an AML-Cytomorphology_LMU class "
                              f"folder (known: {', '.join(AML_CLASSES)}); use dataset "
                              "'folder' for other class folders")
    listing = _list_class_folders(root, folders, ids="stem")
    listing.known_classes = AML_CLASSES
    return listing


# --- one folder per class ------------------------------------------------------------------

@register_loader("folder", "one subfolder of images per class (e.g. PBC)", 257)
def list_folder(root: Path) -> Listing:
    """Any layout `root/<class name>/.../<image>`; image ids are paths relative to root."""
    return _list_class_folders(root, class_folders(root), ids="relative")


def _list_class_folders(root: Path, folders: list[Path], ids: str) -> Listing:
    bad: list[BadFileError] = []
    for path in sorted(root.iterdir()):  # files beside the class folders
        if path.is_file() and not is_ignored(path):
            bad.append(BadFileError(path, "image outside a class folder (label unknown)"))
    entries = []
    for folder in folders:
        for path in image_files(folder, bad, recursive=True):
            image_id = path.stem if ids == "stem" else path.relative_to(root).as_posix()
            image_id = as_text(image_id)
            entries.append(Entry(path, image_id, folder.name))
    present = tuple(f.name for f in folders if any(e.label == f.name for e in entries))
    return Listing(entries, present, bad, known_classes=tuple(f.name for f in folders))


# --- CSV manifest --------------------------------------------------------------------------

# Both spellings: the same message reaches CLI users and Python callers.
_OUTSIDE_HINT = "(--allow-outside-root, or allow_outside_root=True in Python, permits it)"


@register_loader("manifest", "a CSV with columns path, label and optional group", 257)
def list_manifest(root: Path, allow_outside_root: bool = False) -> Listing:
    """`root` is the CSV; paths are relative to its folder and may not leave it
    (no `..`, no absolute paths) unless `allow_outside_root`."""
    if not root.is_file():
        raise LeukolearnError(f"manifest {root} is not a file")
    base = root.parent
    try:
        with open(root, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "path" not in columns or "label" not in columns:
                raise LeukolearnError(f"manifest {root} needs columns path and label "
                                      f"(found {reader.fieldnames})")
            rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
                    for r in reader]
    except UnicodeDecodeError as e:
        raise BadFileError(root, f"not UTF-8 text (byte {e.start}); save it as a UTF-8 CSV") from None
    except csv.Error as e:
        raise BadFileError(root, f"not a readable CSV ({e})") from None
    grouped = "group" in columns
    bad: list[BadFileError] = []
    entries, seen = [], set()
    for k, row in enumerate(rows, start=2):  # row 1 is the header
        rel, label = row["path"], row["label"]
        if not rel and not label:
            continue
        where = f"{root}, row {k}"
        if not rel or not label or (grouped and not row["group"]):
            raise LeukolearnError(f"{where}: path, label{' and group' if grouped else ''} "
                                  "must all be given")
        normal = os.path.normpath(rel)
        if (os.path.isabs(normal) or normal.split(os.sep)[0] == "..") and not allow_outside_root:
            raise LeukolearnError(f"{where}: {rel} is outside the manifest's folder "
                                  f"{_OUTSIDE_HINT}")
        if normal in seen:
            raise LeukolearnError(f"{where}: {rel} is listed twice")
        seen.add(normal)
        path = base / normal
        if not allow_outside_root and not _resolves_inside(path, base):
            raise LeukolearnError(f"{where}: {rel} is a symbolic link (or lies in one) that "
                                  f"leads outside the manifest's folder {_OUTSIDE_HINT}")
        if not path.is_file():
            bad.append(BadFileError(root, f"row {k}: image {rel} not found"))
            continue
        group = row["group"] if grouped else None
        entries.append(Entry(path, Path(normal).as_posix(), label, group=group))
    classes = tuple(sorted({e.label for e in entries}))
    return Listing(entries, classes, bad, known_classes=classes)


def _resolves_inside(path: Path, base: Path) -> bool:
    """Whether `path`, symbolic links followed, is inside `base`."""
    try:
        return path.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError, ValueError):  # a link loop or a NUL: reading it fails later
        return True
