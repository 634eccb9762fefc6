"""The samples of a prediction: which image files, grouped into which samples.

Each folder given holds one sample per subfolder (all images below it); images lying
directly in a given folder form the sample named after that folder; a file given on its own
belongs to its parent folder's sample. A CSV given instead is a manifest with a `path`
column (relative to the CSV's folder) and the sample in `sample_col`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

from leukolearn.errors import LeukolearnError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def collect_samples(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """(image path, sample name) for files and folders, by the rule in the module docstring.
    Two different folders with the same name keep their full paths as sample names."""
    paths = [Path(p) for p in paths]
    found: list[tuple[Path, Path]] = []  # (image, sample folder)
    for path in paths:
        if path.is_dir():
            images = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            for p in images:
                rel = p.relative_to(path).parts
                found.append((p, path if len(rel) == 1 else path / rel[0]))
        elif path.exists():
            found.append((path, path.parent))
        else:
            raise LeukolearnError(f"{path}: no such file or folder")
    if not found:
        raise LeukolearnError(f"no images found in {', '.join(map(str, paths))}")
    folders = {folder for _, folder in found}
    by_name: dict[str, set[Path]] = {}
    for folder in folders:
        by_name.setdefault(_folder_name(folder), set()).add(folder)
    names = {f: (_folder_name(f) if len(by_name[_folder_name(f)]) == 1 else str(f)) for f in folders}
    return [(p, names[folder]) for p, folder in found]


def _folder_name(folder: Path) -> str:
    return folder.resolve().name or str(folder)


def read_sample_manifest(csv_path: Path, sample_col: str | None,
                         path_col: str = "path") -> list[tuple[Path, str]]:
    """(image path, sample) from a CSV; paths relative to the CSV's folder (or absolute).
    Without `sample_col` the whole CSV is one sample named after the file."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip(): c for c in reader.fieldnames or []}
        for needed in filter(None, (path_col, sample_col)):
            if needed not in columns:
                raise LeukolearnError(f"{csv_path}: no column {needed!r} (found {list(columns)})")
        out = []
        for k, row in enumerate(reader, start=2):
            rel = (row[columns[path_col]] or "").strip()
            if not rel:
                continue
            sample = (row[columns[sample_col]] or "").strip() if sample_col else csv_path.stem
            if not sample:
                raise LeukolearnError(f"{csv_path}, row {k}: empty {sample_col!r}")
            out.append((csv_path.parent / rel, sample))
    if not out:
        raise LeukolearnError(f"{csv_path}: lists no images")
    return out
