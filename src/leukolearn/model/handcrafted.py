"""Classifiers on hand-crafted features, as the ALL-IDB papers before deep learning built them,
and the background-colour control as a method: baselines for the CNN in the same protocol.

Features of one cell image (uint8, the model's square input), in `FEATURE_SETS`:
- "cell": colour (HSV histograms of the stained cell region, 8 bins per channel, and its
  mean RGB), texture of the grey image (GLCM contrast, homogeneity, energy and correlation
  at distances 1 and 3 in two directions; a uniform LBP histogram, P=8, R=1; scikit-image),
  and shape from the stain segmentation (`data.segment.segment_cell`: cell and nucleus
  area shares, nucleus-to-cell ratio, the nucleus's eccentricity and solidity, its number
  of lobes);
- "background": the colour of the image's border ring only (mean and s.d. of R, G, B and
  an 8-bin hue histogram), which holds no cell: what a classifier can learn from the
  smear's background, the batch effect the shortcut control found on ALL-IDB2.

The classifier is scikit-learn's standardisation + logistic regression (balanced class
weights, L2, C = 1): it gives probabilities for the AUC and for several classes, and fits
tens of images without the inner cross-validation an SVM's probabilities need.
"""
from __future__ import annotations

import numpy as np

from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_NUCLEUS

FEATURE_SETS = ("cell", "background")
_BORDER = 0.08  # the border ring, as a share of the side


def cell_features(image: np.ndarray) -> np.ndarray:
    """The "cell" features of one (S, S, 3) uint8 image."""
    from scipy import ndimage
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
    from skimage.measure import regionprops

    from leukolearn.data.segment import segment_cell

    mask = segment_cell(image)
    cell = mask != MASK_BACKGROUND
    nucleus = mask == MASK_NUCLEUS
    region = cell if cell.any() else np.ones_like(cell)
    hsv = rgb2hsv(image)[region]  # (n, 3) in [0, 1]
    hist = [np.histogram(hsv[:, c], bins=8, range=(0, 1))[0] / len(hsv) for c in range(3)]
    mean_rgb = image[region].mean(axis=0) / 255
    grey = (rgb2gray(image[::2, ::2]) * 255).astype(np.uint8)
    glcm = graycomatrix(grey // 8, [1, 3], [0, np.pi / 2], levels=32, symmetric=True, normed=True)
    texture = [graycoprops(glcm, p).ravel() for p in ("contrast", "homogeneity", "energy",
                                                       "correlation")]
    lbp = local_binary_pattern(grey, 8, 1, "uniform").astype(int)
    lbp_hist = np.bincount(lbp.ravel(), minlength=10)[:10] / lbp.size
    props = regionprops(nucleus.astype(np.uint8))
    ecc, solid = (props[0].eccentricity, props[0].solidity) if props else (0.0, 0.0)
    lobes = ndimage.label(nucleus)[1]
    area = mask.size
    shape = [cell.sum() / area, nucleus.sum() / area, nucleus.sum() / max(cell.sum(), 1),
             ecc, solid, lobes]
    texture[0] = texture[0] / 100  # GLCM contrast is in grey levels squared
    return np.concatenate([*hist, mean_rgb, *texture, lbp_hist, shape]).astype(np.float64)


def background_features(image: np.ndarray) -> np.ndarray:
    """The "background" features of one (S, S, 3) uint8 image: its border ring's colour."""
    from skimage.color import rgb2hsv

    side = image.shape[0]
    ring = max(1, round(_BORDER * side))
    border = np.ones(image.shape[:2], dtype=bool)
    border[ring:side - ring, ring:side - ring] = False
    pixels = image[border].astype(np.float64) / 255  # (n, 3)
    hue = rgb2hsv(image)[border][:, 0]
    return np.concatenate([pixels.mean(axis=0), pixels.std(axis=0),
                           np.histogram(hue, bins=8, range=(0, 1))[0] / len(hue)])


def extract(images: np.ndarray, feature_set: str) -> np.ndarray:
    """(N, k) features of uint8 images (N, S, S, 3)."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose from {FEATURE_SETS}")
    fn = cell_features if feature_set == "cell" else background_features
    return np.stack([fn(im) for im in images]) if len(images) else np.zeros((0, 0))


def make_classifier(seed: int):
    """A fresh scikit-learn pipeline: standardisation + balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(
        C=1.0, class_weight="balanced", max_iter=2000, random_state=seed))


def class_probabilities(classifier, features: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) probabilities, with 0 for classes the training set lacked."""
    out = np.zeros((len(features), n_classes))
    out[:, classifier.classes_] = classifier.predict_proba(features)
    return out
