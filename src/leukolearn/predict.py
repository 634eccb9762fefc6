"""Applying a saved model to new cell images."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from leukolearn.data.decode import fit_to_square, read_image
from leukolearn.errors import LeukolearnError
from leukolearn.model import PaperCNN
from leukolearn.train import predict_proba

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def collect_image_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (hidden files skipped)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
        elif path.exists():
            found.append(path)
        else:
            raise LeukolearnError(f"{path}: no such file or folder")
    if not found:
        raise LeukolearnError(f"no images found in {', '.join(map(str, paths))}")
    return found


def predict_paths(model: PaperCNN, paths: list[Path], batch_size: int = 64,
                  progress: bool = True) -> np.ndarray:
    """Class probabilities (N, n_classes) for image files, decoded and fitted like training data."""
    from rich.progress import track

    size = model.config.input_size
    out = []
    starts = range(0, len(paths), batch_size)
    for start in track(starts, description="predicting", disable=not progress,
                       total=len(starts)):
        batch = np.stack([fit_to_square(read_image(p), size) for p in paths[start:start + batch_size]])
        out.append(predict_proba(model, batch, batch_size=batch_size))
    return np.concatenate(out)
