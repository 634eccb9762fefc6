"""One synthetic blood-smear image: how each white-cell type and background looks, and
drawing one cell from them (`render_cell`); the data sets made of such images are in
`synthetic`.

Each image imitates one ALL-IDB2 crop in May-Grünwald-Giemsa colours: a pale pink
background with overlapping red cells (discs with a paler centre, cut off at the borders)
and one white cell near the centre (random offset, rotation, size and stain). The white
cell's type sets its size, nucleus shape, chromatin and cytoplasm (see `LOOKS`); the mask
marks background / cytoplasm / nucleus as drawn (the cell mask takes in every pixel the
cell touches, its soft edge included; the nucleus mask is cut at half coverage).

Everything is vectorised numpy on bounding boxes; textures (chromatin, granules, pixel
noise) are random crops of a per-size bank computed once from a fixed seed
(`texture_bank`), so an image depends only on its random generator, its looks and size.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from scipy import ndimage

from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS

REFERENCE_SIZE = 257  # all lengths below are in pixels at this size and scale with `size`

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class CellLook:
    """How one white-cell type is drawn (lengths in pixels at 257 x 257)."""

    radius: float  # cell radius
    nucleus: str  # "round", "lobed" or "kidney"
    nucleus_scale: tuple[float, float]  # nucleus size / cell radius, drawn uniformly
    nucleus_rgb: RGB
    cytoplasm_rgb: RGB
    chromatin: float = 0.05  # contrast of the chromatin texture (0 = smooth)
    clumps: float = 0.0  # dark chromatin clumps (0..1)
    lobes: tuple[int, int] = (1, 1)  # number of lobes for "lobed", inclusive range
    lobe_arc: float = 0.45  # lobes sit on an arc of this radius / cell radius ...
    lobe_step: float = 1.1  # ... this many radians apart
    nucleoli: tuple[int, int] = (0, 0)
    granule_rgb: RGB | None = None
    granule_density: float = 0.0  # share of cytoplasm covered by granules
    granule_size: str = "fine"  # "fine", "medium" or "coarse"
    granules_on_nucleus: bool = False
    rim_rgb: RGB | None = None  # darker cytoplasm at the cell border (basophilic rim)


LOOKS: dict[str, CellLook] = {
    # large, round nucleus filling most of the cell, fine pale chromatin, nucleoli, thin blue rim
    "blast": CellLook(
        radius=66, nucleus="round", nucleus_scale=(0.82, 0.90),
        nucleus_rgb=(134, 94, 172), cytoplasm_rgb=(170, 182, 224), chromatin=0.04,
        nucleoli=(1, 3), rim_rgb=(130, 150, 210)),
    # small cell, dense dark round nucleus with clumped chromatin, thin blue rim
    "lymphocyte": CellLook(
        radius=37, nucleus="round", nucleus_scale=(0.72, 0.82),
        nucleus_rgb=(78, 44, 120), cytoplasm_rgb=(150, 172, 226), chromatin=0.10,
        clumps=0.6),
    # pinkish granular cytoplasm, 3-4 lobes joined by thin strands
    "neutrophil": CellLook(
        radius=53, nucleus="lobed", nucleus_scale=(0.2, 0.25), lobes=(3, 4), lobe_step=0.95,
        nucleus_rgb=(92, 54, 134), cytoplasm_rgb=(226, 198, 214), chromatin=0.10,
        clumps=0.4, granule_rgb=(190, 150, 190), granule_density=0.35),
    # large, grey-blue cytoplasm, folded kidney-shaped nucleus with lacy chromatin
    "monocyte": CellLook(
        radius=66, nucleus="kidney", nucleus_scale=(0.58, 0.66),
        nucleus_rgb=(140, 106, 170), cytoplasm_rgb=(186, 184, 212), chromatin=0.12,
        clumps=0.25, granule_rgb=(214, 208, 226), granule_density=0.12,
        granule_size="coarse"),
    # orange-red coarse granules, bilobed nucleus
    "eosinophil": CellLook(
        radius=55, nucleus="lobed", nucleus_scale=(0.27, 0.31), lobes=(2, 2),
        lobe_arc=0.42, lobe_step=1.8,
        nucleus_rgb=(100, 60, 140), cytoplasm_rgb=(236, 184, 160), chromatin=0.08,
        clumps=0.3, granule_rgb=(222, 108, 70), granule_density=0.5, granule_size="medium"),
    # dark purple coarse granules over cytoplasm and nucleus
    "basophil": CellLook(
        radius=49, nucleus="lobed", nucleus_scale=(0.33, 0.37), lobes=(2, 2),
        lobe_arc=0.3, lobe_step=1.4,
        nucleus_rgb=(116, 78, 156), cytoplasm_rgb=(204, 176, 210), chromatin=0.06,
        granule_rgb=(62, 26, 100), granule_density=0.38, granule_size="coarse",
        granules_on_nucleus=True),
}


@dataclass(frozen=True)
class BackgroundLook:
    """The smear around the white cell: its tint and how crowded it is with red cells."""

    tint: RGB  # added to the base background colour
    red_cells: float  # mean number of red cells in a 257 x 257 crop


_BASE_BACKGROUND: RGB = (236, 224, 226)
BACKGROUNDS: dict[str, BackgroundLook] = {
    "blast": BackgroundLook(tint=(-9, -6, 8), red_cells=6),
    "other": BackgroundLook(tint=(6, 0, -8), red_cells=11),
    "lymphocyte": BackgroundLook(tint=(6, 0, -8), red_cells=11),
    "neutrophil": BackgroundLook(tint=(2, -9, -2), red_cells=8),
    "monocyte": BackgroundLook(tint=(-6, -2, -2), red_cells=14),
    "eosinophil": BackgroundLook(tint=(8, 5, 5), red_cells=5),
    "basophil": BackgroundLook(tint=(-8, -8, -6), red_cells=9),
}


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class TextureBank:
    """Noise fields larger than the image; each image takes random crops (cheap views)."""

    smooth: np.ndarray  # (B, B) unit std, large scale: outlines
    medium: np.ndarray  # (B, B) unit std: chromatin clumps, cytoplasm texture
    fine: np.ndarray  # (B, B) unit std: fine chromatin
    speck_fine: np.ndarray  # (B, B) unit std at granule scale (neutrophil)
    speck_medium: np.ndarray  # (B, B) unit std at granule scale (eosinophil)
    speck_coarse: np.ndarray  # (B, B) unit std at granule scale (basophil, monocyte)
    illumination: np.ndarray  # (B, B) slow optical-density changes of the slide
    pixel: np.ndarray  # (3, B, B) sensor noise (std 2.5) plus 0.5 so truncation rounds
    red_cells: tuple[np.ndarray, ...]  # red-cell thickness sprites (h, w), 0..1


@lru_cache(maxsize=4)
def texture_bank(size: int) -> TextureBank:
    s = size / REFERENCE_SIZE
    b = 2 * size
    r = np.random.default_rng(20210415)  # fixed: the bank is part of the generator

    def field(sigma: float) -> np.ndarray:
        f = ndimage.gaussian_filter(r.standard_normal((b, b)).astype(np.float32),
                                    max(sigma * s, 0.3), mode="wrap")
        return (f - f.mean()) / f.std()

    sprites = []
    for radius in np.linspace(27, 33, 4) * s:
        for stretch in (0.9, 1.0, 1.1):
            half = int(np.ceil(radius * 1.1)) + 1
            dy, dx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
            d = np.sqrt((dx * stretch) ** 2 + (dy / stretch) ** 2)
            pallor = np.clip(1.0 - (d / (0.55 * radius)) ** 2, 0, 1)  # the thin centre
            sprites.append(np.clip(radius - d + 0.5, 0, 1) * (1.0 - 0.5 * pallor))
    return TextureBank(
        smooth=field(10), medium=field(2.6), fine=field(1.2), speck_fine=field(0.9),
        speck_medium=field(1.25), speck_coarse=field(1.7),
        illumination=0.012 * field(14),
        pixel=(2.5 * r.standard_normal((3, b, b)) + 0.5).astype(np.float32),
        red_cells=tuple(sp.astype(np.float32) for sp in sprites))


class _Crops:
    """Random, randomly flipped (h, w) windows of the bank fields for one image."""

    def __init__(self, rng: np.random.Generator, bank: TextureBank):
        self.rng, self.bank = rng, bank

    def take(self, name: str, h: int, w: int) -> np.ndarray:
        f = getattr(self.bank, name)
        y = self.rng.integers(0, f.shape[-2] - h + 1)
        x = self.rng.integers(0, f.shape[-1] - w + 1)
        fy, fx = self.rng.choice((-1, 1), 2)
        return f[..., y:y + h, x:x + w][..., ::fy, ::fx]


def _blend(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """canvas = canvas * (1 - alpha) + colour * alpha, in place.

    canvas (3, h, w), alpha (h, w), colour (3, 1, 1) or (3, h, w).
    """
    canvas += alpha * (colour - canvas)


# Optical density of one red-cell layer (Beer-Lambert): thickness 1 turns the background
# (236, 224, 226) into about (216, 161, 171); overlaps multiply, so they look darker.
_RED_CELL_OD = np.array([0.09, 0.33, 0.28])[:, None, None]
_NUCLEOLUS_RGB = (172, 146, 198)


def render_cell(look: CellLook, scenery: BackgroundLook, rng: np.random.Generator,
                size: int, jitter: float, bank: TextureBank, image_out: np.ndarray,
                mask_out: np.ndarray) -> None:
    """Draw one cell into image_out (size, size, 3) uint8 and mask_out (size, size) uint8.

    Works channel-first, (3, H, W), with colours shaped (3, 1, 1): numpy broadcasts that
    several times faster than a trailing axis of length 3.
    """
    s = size / REFERENCE_SIZE
    j = jitter
    crops = _Crops(rng, bank)
    gain = 1 + rng.normal(0, 0.02 * j, 3)  # stain strength and brightness of this slide
    offset = rng.normal(0, 3 * j)

    def stain(rgb, sd: float) -> np.ndarray:  # (3, 1, 1) float32
        rgb = (np.asarray(rgb) + rng.normal(0, sd * j, 3)) * gain + offset
        return rgb.astype(np.float32)[:, None, None]

    # ---- background: tinted pale pink; red cells add optical density (paler centres)
    thickness = np.zeros((size, size), np.float32)
    for _ in range(rng.poisson(scenery.red_cells)):
        sprite = bank.red_cells[rng.integers(len(bank.red_cells))]
        if rng.integers(2):
            sprite = sprite.T
        h, w = sprite.shape
        y, x = rng.integers(-h // 3, size - 2 * h // 3, 2)  # may be cut by the border
        ys, xs = slice(max(y, 0), min(y + h, size)), slice(max(x, 0), min(x + w, size))
        thickness[ys, xs] += sprite[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
    tint = np.reshape(scenery.tint, (3, 1, 1))  # a warmer background also tints red cells
    od = _RED_CELL_OD * (1 + rng.normal(0, 0.06 * j)) - 0.002 * tint
    canvas = thickness * od.astype(np.float32)  # (3, H, W)
    canvas += crops.take("illumination", size, size)
    np.exp(-canvas, out=canvas)
    canvas *= stain(np.asarray(_BASE_BACKGROUND) + scenery.tint, 1.5)

    # ---- the white cell, drawn in its bounding box
    radius = look.radius * s * float(np.clip(1 + rng.normal(0, 0.07 * j), 0.8, 1.2))
    cy, cx = size / 2 + np.clip(rng.normal(0, 0.04 * size * j, 2), -0.1 * size, 0.1 * size)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs, dy, dx = _box(cy, cx, radius * 1.1 + 3, size)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = dx * cos + dy * sin  # (h, w) coordinates in the cell's own frame
    v = dy * cos - dx * sin
    h, w = u.shape
    smooth = crops.take("smooth", h, w)
    medium = crops.take("medium", h, w)
    ecc = rng.uniform(0.0, 0.08)
    cell_sd = _ellipse_sd(u, v, 0, 0, radius * (1 + ecc), radius * (1 - ecc)) + 1.2 * s * smooth
    cell = np.clip(0.5 - cell_sd, 0, 1)
    nuc_sd = _nucleus_sd(look, u, v, radius, rng) + (0.8 * s) * medium
    nucleus = np.minimum(np.clip(0.5 - nuc_sd, 0, 1), cell)

    cyto_rgb = stain(look.cytoplasm_rgb, 5)
    cyto = cyto_rgb * (1 + 0.03 * medium)  # (3, h, w)
    if look.rim_rgb is not None:  # darker blue towards the membrane
        edge = np.clip(1 + cell_sd / (0.12 * radius), 0, 1)
        cyto += edge * (stain(look.rim_rgb, 5) - cyto_rgb)
    nuc_rgb = stain(look.nucleus_rgb, 6)
    chromatin = crops.take("fine", h, w) * look.chromatin
    if look.clumps:
        chromatin -= look.clumps * 0.35 * np.clip(medium - 0.3, 0, 1)
    nuc = nuc_rgb * (1 + chromatin)
    if look.nucleoli[1]:
        glow = _nucleoli(look, u, v, radius, rng, nuc_sd)
        nuc += glow * (0.9 * (stain(_NUCLEOLUS_RGB, 4) - nuc_rgb))
    box = canvas[:, ys, xs]  # (3, h, w) view
    _blend(box, cell, cyto)
    _blend(box, nucleus, nuc)
    if look.granule_density:
        speck = crops.take("speck_" + look.granule_size, h, w)
        t = NormalDist().inv_cdf(1 - look.granule_density)
        granules = np.clip((speck - t) * 1.6, 0, 1)
        granules *= cell if look.granules_on_nucleus else cell - nucleus
        _blend(box, granules * _GRANULE_OPACITY[look.granule_size], stain(look.granule_rgb, 5))
    # a mild optical blur of the cell (the background is smooth already)
    for axis in (1, 2):
        box[:] = ndimage.correlate1d(box, _BLUR, axis=axis, mode="nearest")

    mask_out[:] = MASK_BACKGROUND
    mask_box = mask_out[ys, xs]
    mask_box[cell > 0.05] = MASK_CYTOPLASM  # every pixel the cell touches: no cell colour
    mask_box[nucleus > 0.5] = MASK_NUCLEUS

    canvas += crops.take("pixel", size, size)  # sensor noise (+0.5 for rounding)
    np.clip(canvas, 0, 255, out=canvas)
    image_out[:] = canvas.transpose(1, 2, 0)  # truncates to uint8


_BLUR = np.array([0.25, 0.5, 0.25], np.float32)
_GRANULE_OPACITY = {"fine": 0.55, "medium": 0.85, "coarse": 0.9}


def _box(cy: float, cx: float, r: float, size: int):
    """Slices of the square around (cy, cx) clipped to the image, and its (dy, dx) grids."""
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, size)
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, size)
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]  # (h, 1)
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]  # (1, w)
    return slice(y0, y1), slice(x0, x1), dy, dx


def _ellipse_sd(u, v, cu, cv, a, b):
    """Approximate signed distance (pixels, < 0 inside) to an axis-aligned ellipse."""
    cu, cv, a, b = float(cu), float(cv), float(a), float(b)  # numpy scalars would upcast
    return (np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2) - 1) * (a * b) ** 0.5


def _segment_distance(u, v, p, q):
    """Distance from every (u, v) to the segment p-q."""
    p, q = (float(p[0]), float(p[1])), (float(q[0]), float(q[1]))
    du, dv = q[0] - p[0], q[1] - p[1]
    t = np.clip(((u - p[0]) * du + (v - p[1]) * dv) / (du * du + dv * dv + 1e-9), 0, 1)
    return np.hypot(u - p[0] - t * du, v - p[1] - t * dv)


def _nucleus_sd(look: CellLook, u, v, radius: float, rng: np.random.Generator):
    k = rng.uniform(*look.nucleus_scale)
    if look.nucleus == "round":
        e = rng.uniform(0, 0.08)
        a, b = radius * k * (1 + e), radius * k * (1 - e)
        room = max(radius * 0.96 - max(a, b), 0)
        off = room * rng.uniform(0.2, 1.0)
        t = rng.uniform(0, 2 * np.pi)
        return _ellipse_sd(u, v, off * np.cos(t), off * np.sin(t), a, b)
    if look.nucleus == "kidney":
        a, b = radius * k, radius * k * 0.8
        cv = -0.12 * radius
        notch = _ellipse_sd(u, v, rng.normal(0, 0.08) * radius, cv + b * 1.05,
                            0.42 * radius * rng.uniform(0.85, 1.15), 0.3 * radius)
        return np.maximum(_ellipse_sd(u, v, 0, cv, a, b), -notch)
    # "lobed": lobes on an arc around the cell centre, joined by thin chromatin strands
    n = int(rng.integers(look.lobes[0], look.lobes[1] + 1))
    arc = radius * look.lobe_arc * rng.uniform(0.92, 1.05)
    span = look.lobe_step * (n - 1)
    angles = np.linspace(-span / 2, span / 2, n) + rng.normal(0, 0.1, n)
    centres = [(arc * np.cos(t) + rng.normal(0, 0.04) * radius,
                arc * np.sin(t) + rng.normal(0, 0.04) * radius) for t in angles]
    sd = None
    for (cu, cv) in centres:
        r = radius * k * rng.uniform(0.9, 1.1)
        d = np.hypot(u - float(cu), v - float(cv)) - r
        sd = d if sd is None else np.minimum(sd, d)
    strand = 0.035 * radius
    for p, q in zip(centres[:-1], centres[1:]):
        sd = np.minimum(sd, _segment_distance(u, v, p, q) - strand)
    return sd


def _nucleoli(look: CellLook, u, v, radius: float, rng: np.random.Generator, nuc_sd):
    """Soft light spots inside the nucleus (0..1)."""
    glow = np.zeros(u.shape, np.float32)
    inside = np.argwhere(nuc_sd < -0.25 * radius)  # candidate centres well inside
    if len(inside) == 0:
        return glow
    for _ in range(int(rng.integers(look.nucleoli[0], look.nucleoli[1] + 1))):
        iy, ix = inside[rng.integers(len(inside))]
        r = radius * rng.uniform(0.07, 0.12)
        d = np.hypot(u - u[iy, ix], v - v[iy, ix])
        glow = np.maximum(glow, np.clip(1.0 - (d / r) ** 2, 0, 1))
    return glow
