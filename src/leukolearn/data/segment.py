"""Where the cell is, from its stain colours alone, for images without expert masks.

`segment_cell` splits an image into background, cytoplasm and nucleus (region codes of
`CellImages.masks`) by three-level Otsu thresholds on the stain, keeps the central
connected cell and clips stray arms; `dice` scores it against expert masks (0.955 for
the nucleus, 0.944 for the whole cell on ALL-IDB2's 260 images).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS
from leukolearn.errors import LeukolearnError


def dice(mask_a: np.ndarray, mask_b: np.ndarray, code: int | tuple[int, ...]) -> float:
    """Dice overlap of the pixels with `code` (or any of several codes, e.g. (1, 2) for the
    whole cell) in two masks; NaN when neither mask has any such pixel."""
    codes = np.atleast_1d(code)
    a, b = np.isin(mask_a, codes), np.isin(mask_b, codes)
    denom = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / denom) if denom else float("nan")


def segment_cell(image: np.ndarray) -> np.ndarray:
    """Mask (H, W) uint8 of the white cell nearest the centre of a May-Grunwald-Giemsa crop.

    Colour rules, each with a per-image three-class Otsu threshold (photos differ in
    brightness and stain): blue minus green is high on stained cell parts (purple nucleus,
    bluish or lilac cytoplasm) and about zero on pink red cells and grey plasma; blue minus
    twice green singles out the dark purple nucleus. The nucleus is the thresholded
    component with the most area near the centre (plus any lobes inside the cell); the
    cell is the thresholded region around it, opened to cut thin bridges, holes filled,
    and clipped along rays from the nucleus to at most 1.25 x the median ray length, which
    cuts off red cells that touch it. Known misses: cytoplasm with little blue (orange
    eosinophil granules, pale pink neutrophils) is lost to the background.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise LeukolearnError(f"segment_cell takes one (H, W, 3) image, got {image.shape}")
    h, w = image.shape[:2]
    scale = min(h, w) / 257  # lengths below are tuned at ALL-IDB2's 257 px
    rgb = image.astype(np.float32)
    g, b = rgb[..., 1], rgb[..., 2]
    stain = ndimage.gaussian_filter(b - g, sigma=1.5 * scale)  # (H, W)
    dark_stain = ndimage.gaussian_filter(b - 2 * g, sigma=1.5 * scale)
    t_cell = _otsu3(stain)[0]
    nucleus_px = dark_stain > _otsu3(dark_stain)[1]
    nucleus = _central(nucleus_px)
    cell = ndimage.binary_opening(stain > t_cell, _disc(max(1, round(3 * scale)))) | nucleus
    cell = ndimage.binary_fill_holes(_central(cell, seed=nucleus))
    if nucleus.any():
        cell = _central(_star_clip(cell, ndimage.center_of_mass(nucleus)) | nucleus, seed=nucleus)
    nucleus = ndimage.binary_fill_holes(nucleus_px & cell)
    mask = np.full((h, w), MASK_BACKGROUND, dtype=np.uint8)
    mask[cell] = MASK_CYTOPLASM
    mask[nucleus] = MASK_NUCLEUS
    return mask


def segment_cells(images: np.ndarray) -> np.ndarray:
    """(N, H, W) masks for uint8 images (N, H, W, 3), one `segment_cell` each."""
    if not len(images):
        return np.zeros(np.shape(images)[:3], dtype=np.uint8)
    return np.stack([segment_cell(im) for im in images])


def _otsu3(values: np.ndarray, bins: int = 128) -> tuple[float, float]:
    """Two thresholds maximising the between-class variance of three classes."""
    hist, edges = np.histogram(values, bins=bins)
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w, m = np.cumsum(p), np.cumsum(p * centres)  # class weight and first moment up to bin i
    mu = m[-1]
    i, j = np.triu_indices(bins - 1, k=1)  # class 1 = bins[:i+1], 2 = (i, j], 3 = (j, end]
    w1, w2, w3 = w[i], w[j] - w[i], 1 - w[j]
    m1, m2, m3 = m[i], m[j] - m[i], mu - m[j]
    valid = (w1 > 0) & (w2 > 0) & (w3 > 0)
    if not valid.any():  # (nearly) one colour: nothing to split, nothing found
        return float("inf"), float("inf")
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m1 ** 2 / w1 + m2 ** 2 / w2 + m3 ** 2 / w3  # between-class variance + const
    best = np.nanargmax(np.where(valid, var, np.nan))
    return float(edges[i[best] + 1]), float(edges[j[best] + 1])


def _central(pixels: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    """The connected component of `pixels` overlapping `seed` most, or without a seed the
    one with the most area near the centre (area weighted by a Gaussian of the distance;
    a quarter of that for components cut by the border: neighbours, not the centred cell)."""
    labels, n = ndimage.label(pixels)
    if n == 0:
        return pixels
    index = np.arange(1, n + 1)
    if seed is not None and seed.any():
        overlap = ndimage.sum(seed, labels, index)
        if overlap.max() > 0:
            return labels == index[np.argmax(overlap)]
    h, w = pixels.shape
    yy, xx = np.mgrid[:h, :w]
    near = np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (min(h, w) / 4) ** 2))
    score = ndimage.sum(near, labels, index)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    score[border[border > 0] - 1] /= 4
    return labels == index[np.argmax(score)]


def _star_clip(cell: np.ndarray, centre, limit: float = 1.25, n_rays: int = 72) -> np.ndarray:
    """Along each ray from `centre` the cell ends where the ray first leaves `cell`, and
    no farther than `limit` x the median ray: white cells are round, attached red cells
    stick out in a few directions only."""
    h, w = cell.shape
    cy, cx = centre
    angles = np.linspace(0, 2 * np.pi, n_rays, endpoint=False)
    radii = np.arange(int(np.hypot(h, w)) + 1)
    ys = np.round(cy + radii[None] * np.sin(angles)[:, None]).astype(int)  # (rays, radii)
    xs = np.round(cx + radii[None] * np.cos(angles)[:, None]).astype(int)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    on = np.zeros_like(inside)
    on[inside] = cell[ys[inside], xs[inside]]
    length = np.where(on.all(1), radii[-1], np.argmin(on, axis=1)).astype(float)  # first exit
    length = np.minimum(length, limit * np.median(length))
    yy, xx = np.mgrid[:h, :w]
    pos = np.mod(np.arctan2(yy - cy, xx - cx), 2 * np.pi) / (2 * np.pi) * n_rays  # ray units
    i0 = np.floor(pos).astype(int) % n_rays
    frac = pos - np.floor(pos)
    allowed = (1 - frac) * length[i0] + frac * length[(i0 + 1) % n_rays]  # (H, W)
    return cell & (np.hypot(yy - cy, xx - cx) <= allowed + 0.5)


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return yy ** 2 + xx ** 2 <= radius ** 2
