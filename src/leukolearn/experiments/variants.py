"""The images the shortcut control trains on: the cell alone, the background alone.

`cell-only` paints everything farther than MARGIN px from the cell with one fill colour
(the median background of all images, so the fill carries no per-image information);
`background-only` paints a disc over each cell that covers COVER_QUANTILE of the cells
whole, leaving only the image corners: red cells and smear background. The masks come
from an expert masks folder or, where there is none, the stain segmentation
(`data.segment`). A run directory records its variant, so `apply_stored_variant`
rebuilds its pixels from the original images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS, CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.progress import track

VARIANTS = ("original", "cell-only", "background-only")
MARGIN = 3  # px of background kept around the cell (cell-only) / painted over (background-only)
COVER_QUANTILE = 0.99  # the background-only disc covers this share of the cells whole


def median_background(images: np.ndarray, masks: np.ndarray) -> tuple[int, int, int]:
    """The median colour of all background pixels of all images: one neutral fill colour."""
    bg = np.asarray(images)[np.asarray(masks) == MASK_BACKGROUND]  # (P, 3)
    if not len(bg):
        raise LeukolearnError("no background pixels to take a fill colour from")
    return tuple(int(v) for v in np.median(bg, axis=0))


def cell_only(images: np.ndarray, masks: np.ndarray, fill=None, margin: int = 3) -> np.ndarray:
    """Copies of uint8 images (N, H, W, 3) with everything farther than `margin` px from
    the cell (cytoplasm + nucleus) painted with `fill` (an RGB colour; default: the
    median background colour of these images, one colour for all, so the fill carries no
    per-image information). Pass the same `fill` to every call of one experiment."""
    return _paint(images, masks, fill, margin, keep_cell=True)


def background_only(images: np.ndarray, masks: np.ndarray, fill=None, margin: int = 3
                    ) -> np.ndarray:
    """Copies with the cell, grown by `margin` px, painted with `fill` (see `cell_only`)."""
    return _paint(images, masks, fill, margin, keep_cell=False)


def _paint(images, masks, fill, margin: int, keep_cell: bool) -> np.ndarray:
    images, masks = np.asarray(images), np.asarray(masks)
    if images.shape[:3] != masks.shape or images.ndim != 4:
        raise LeukolearnError(f"images {images.shape} and masks {masks.shape} do not match")
    fill = np.asarray(median_background(images, masks) if fill is None else fill, dtype=np.uint8)
    out = images.copy()
    for n in range(len(images)):
        cell = masks[n] != MASK_BACKGROUND
        if margin > 0 and cell.any():  # grow by a disc: the distance to the cell <= margin
            cell = ndimage.distance_transform_edt(~cell) <= margin
        out[n][~cell if keep_cell else cell] = fill
    return out


@dataclass(frozen=True)
class ShortcutMasks:
    """The masks that cut cell from background, and where they came from."""

    masks: np.ndarray  # (N, H, W) region codes
    kind: str  # "expert" (a masks folder), "segmentation" (focus.segment_cells), "given"
    masks_dir: str | None = None
    dice: dict[str, float] = field(default_factory=dict)  # segmentation vs expert, when both

    @property
    def short(self) -> str:
        return {"expert": "expert masks", "segmentation": "stain segmentation",
                "given": "dataset masks"}[self.kind]

    @property
    def description(self) -> str:
        return {"expert": f"expert masks ({self.masks_dir})",
                "segmentation": "stain segmentation (focus.segment_cells)",
                "given": "the dataset's own masks"}[self.kind]


def shortcut_masks(cells: CellImages, masks_dir: str | Path | None = None,
                   progress: bool = False) -> ShortcutMasks:
    """Expert masks when `cells` carry them (loaded with `masks_dir`, or made with masks),
    else the stain segmentation. With expert masks the segmentation is run too, only to
    report its Dice overlap with them (median over images, whole cell and nucleus)."""
    from leukolearn.data.segment import dice

    segmented = segment_masks(cells.images, progress)
    if cells.masks is None:
        return ShortcutMasks(segmented, "segmentation")
    kind = "expert" if masks_dir is not None else "given"
    scores = {
        "cell": [dice(s, e, (1, 2)) for s, e in zip(segmented, cells.masks)],
        "nucleus": [dice(s, e, MASK_NUCLEUS) for s, e in zip(segmented, cells.masks)],
    }
    med = {f"{k}_median": float(np.nanmedian(v)) for k, v in scores.items()}
    mean = {f"{k}_mean": float(np.nanmean(v)) for k, v in scores.items()}
    return ShortcutMasks(np.asarray(cells.masks), kind,
                         None if masks_dir is None else str(masks_dir), {**med, **mean})


def apply_variant(cells: CellImages, name: str, masks: np.ndarray, fill, margin: int = MARGIN,
                  radius: int | None = None) -> CellImages:
    """`cells` with the background (cell-only) or the cell (background-only) painted with
    one `fill` colour; masks kept. "original" returns `cells` unchanged.

    background-only paints a disc of one `radius` for every image (centred on the cell)
    together with the cell: painting the cell's own silhouette would leave its size and
    outline visible, and cell size alone tells a blast from a lymphocyte."""
    if name == "original":
        return cells
    if name not in VARIANTS:
        raise LeukolearnError(f"unknown shortcut variant {name!r}; choose from {VARIANTS}")
    if name == "cell-only":
        images = cell_only(cells.images, masks, fill=fill, margin=margin)
    else:
        cover = cover_masks(masks, cover_radius(masks) if radius is None else radius)
        images = background_only(cells.images, cover, fill=fill, margin=margin)
    return CellImages(images, cells.labels, cells.class_names, cells.image_ids, masks=masks,
                      groups=cells.groups)


def cover_radius(masks: np.ndarray, quantile: float = COVER_QUANTILE) -> int:
    """The radius (px) of a disc around each cell's centre that holds the whole cell for
    `quantile` of the images (the rest are painted disc + their own outline)."""
    return int(np.ceil(np.quantile([_extent(m)[1] for m in masks], quantile))) if len(masks) else 0


def cover_masks(masks: np.ndarray, radius: int) -> np.ndarray:
    """Masks whose cell is the cell plus a disc of `radius` around its centre (the image
    centre when no cell was found)."""
    out = np.array(masks, copy=True)
    h, w = out.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    for m in out:
        (cy, cx), _ = _extent(m)
        m[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & (m == MASK_BACKGROUND)] = \
            MASK_CYTOPLASM
    return out


def _extent(mask: np.ndarray) -> tuple[tuple[float, float], float]:
    """Centre of the cell pixels of one mask and their largest distance from it."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return (mask.shape[0] / 2, mask.shape[1] / 2), 0.0
    cy, cx = ys.mean(), xs.mean()
    return (cy, cx), float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max()))


def apply_stored_variant(cells: CellImages, variant: Mapping[str, Any]) -> CellImages:
    """Rebuild a variant's images from the record in its run's dataset.json."""
    name = variant.get("name", "original")
    if name == "original":
        return cells
    if variant.get("masks") == "segmentation":
        masks = segment_masks(cells.images, progress=False)
    elif cells.masks is not None:
        masks = cells.masks
    else:
        raise LeukolearnError(f"the {name} variant was made with {variant.get('masks')} masks, "
                              "which cannot be loaded again here")
    return apply_variant(cells, name, masks, variant["fill"], variant["margin"],
                         variant.get("radius"))


def segment_masks(images: np.ndarray, progress: bool = False) -> np.ndarray:
    """`focus.segment_cells` with a progress bar."""
    from leukolearn.data.segment import segment_cell

    if not len(images):
        return np.zeros(images.shape[:3], dtype=np.uint8)
    return np.stack([segment_cell(im) for im in track(images, "stain segmentation",
                                                       enabled=progress)])
