"""Stain normalisation: every image a model sees brought to its training cells' colours.

Reinhard et al. (IEEE CG&A 2001) colour transfer in Lab, as torchstain implements it
(`NumpyReinhardNormalizer`): each image's L, a and b channels are standardised and given
the target's mean and s.d. The target is fitted on the training cells (`fit_stain`: their
pixels side by side, at most `MAX_FIT_IMAGES` of them, as one image), stored with the model
(`ModelConfig.extra["stain_norm"]`, plain numbers) and applied by `normalise` to the
training, validation and test images and to every image `predict` and `evaluate` give the
model (`training.loop.predict_with_hidden`). torchstain has no way to store a fitted
normaliser, so `normalise` sets the two target arrays that its `fit` sets.
"""
from __future__ import annotations

import numpy as np

from leukolearn.data.cellimages import CellImages

METHODS = ("reinhard",)
STAIN_KEY = "stain_norm"  # ModelConfig.extra key
MAX_FIT_IMAGES = 64


def fit_stain(images: np.ndarray, method: str = "reinhard") -> dict:
    """The target of `method` fitted on uint8 images (N, H, W, 3)."""
    from torchstain.numpy.normalizers import NumpyReinhardNormalizer

    if method not in METHODS:
        raise ValueError(f"unknown stain normalisation {method!r}; choose from {METHODS}")
    step = max(1, len(images) // MAX_FIT_IMAGES)
    normaliser = NumpyReinhardNormalizer()
    normaliser.fit(np.concatenate(list(np.asarray(images)[::step][:MAX_FIT_IMAGES]), axis=1))
    return {"method": method, "means": [float(x) for x in normaliser.target_means],
            "stds": [float(x) for x in normaliser.target_stds]}


def normalise(images: np.ndarray, target: dict) -> np.ndarray:
    """uint8 images (N, H, W, 3) with their stain brought to `target` (`fit_stain`'s). An
    image without spread in a channel (a blank frame) is left as it is: standardising it
    would divide by zero."""
    from torchstain.numpy.normalizers import NumpyReinhardNormalizer

    normaliser = NumpyReinhardNormalizer()
    normaliser.target_means = np.asarray(target["means"], dtype=np.float32)
    normaliser.target_stds = np.asarray(target["stds"], dtype=np.float32)
    out = np.empty_like(np.asarray(images))
    for i, image in enumerate(images):
        if image.reshape(-1, 3).std(axis=0).min() < 1e-3:
            out[i] = image
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            out[i] = normaliser.normalize(np.asarray(image))
    return out


def stain_normalised(method: str | None, cells: CellImages, train_idx: np.ndarray,
                     val_idx: np.ndarray) -> tuple[dict | None, CellImages, np.ndarray, np.ndarray]:
    """(the target fitted on the training cells, the training and validation cells
    normalised to it as a CellImages of those cells only, the two sets' indices into it);
    without a method (None) the arguments as they are."""
    if not method:
        return None, cells, train_idx, val_idx
    target = fit_stain(cells.images[train_idx], method)
    rows = np.union1d(train_idx, val_idx)
    subset = cells.subset(rows)
    subset = CellImages(normalise(subset.images, target), subset.labels, subset.class_names,
                        subset.image_ids)
    return target, subset, np.searchsorted(rows, train_idx), np.searchsorted(rows, val_idx)
