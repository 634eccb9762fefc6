"""Where does the network look? Relevance shares on background / cytoplasm / nucleus, a
stain-colour segmentation for data sets without masks, and shortcut-control images.

The paper (Fig 4b) read "the focus moves onto the nucleus with more training images" off
heatmaps; `relevance_shares` turns that into numbers. `cell_only` / `background_only` make
the control images that show whether a network can classify from the background alone
(ALL-IDB2's blast and healthy photos differ in background colour).
"""
from __future__ import annotations

import numpy as np

from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS
from leukolearn.errors import LeukolearnError

REGIONS = ("background", "cytoplasm", "nucleus")  # column order of `relevance_shares`


def relevance_shares(relevance: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N, 3) share of each image's POSITIVE relevance on background, cytoplasm, nucleus.

    relevance (N, H, W) any real map (LRP, or saliency which is >= 0); masks (N, H, W) codes.
    Negative relevance (evidence against the class) is left out so that shares are
    fractions that sum to 1. A map with no positive value gives a row of NaN.
    """
    relevance, masks = np.asarray(relevance, dtype=np.float64), np.asarray(masks)
    if relevance.shape != masks.shape or relevance.ndim != 3:
        raise LeukolearnError(f"relevance {relevance.shape} and masks {masks.shape} must both "
                              "be (N, H, W)")
    pos = np.clip(relevance, 0, None).reshape(len(relevance), -1)  # (N, H*W)
    codes = masks.reshape(len(masks), -1)
    sums = np.stack([(pos * (codes == c)).sum(1)
                     for c in (MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS)], axis=1)  # (N, 3)
    total = pos.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sums / np.where(total > 0, total, 1), np.nan)


# --------------------------------------------------------------------------- segmentation


# --------------------------------------------------------------------------- control images


