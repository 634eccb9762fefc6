"""Whether new cells look like a model's training cells: the domain check every model carries.

A model trained on one lab's smears fails silently on another's: the stain, the scanner and
the cropping move the colours and the apparent cell size, which the network relies on. The
check describes each cell by
- its colour: mean and s.d. of R, G and B over the image, and the mean colour of the image's
  border (the smear background, which differs between labs);
- its apparent size: the share of stained pixels (blue minus green above a threshold fixed
  by Otsu's method on the training cells), and their mean colour;
- the network's own 32-d hidden layer (what the classifier sees);

standardises these features on the model's training cells and scores a cell by its
Mahalanobis distance to them, with scikit-learn's Ledoit-Wolf shrunk covariance (tens of
training cells for 45 features: the plain covariance would be singular). The distances of
held-out in-domain cells (the model's validation cells, which it did not train on) set the
scale: a cell is *outside* when it lies farther than `CELL_QUANTILE` of them; a sample is
outside the training domain when its median distance passes `SAMPLE_QUANTILE` of the
medians of as many held-out cells (`sample_domain`), so about 1 % of in-domain samples are
flagged by chance, while a whole sample from another lab moves together.

The check is a dictionary of plain numbers (`DomainCheck.to_dict`), stored in the model
file's config (`ModelConfig.extra["domain"]`) by `train` and by every sweep job.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from leukolearn.errors import LeukolearnError

DOMAIN_KEY = "domain"  # ModelConfig.extra key
VERSION = 1
CELL_QUANTILE = 0.95  # a cell farther than this quantile of held-out in-domain cells is outside
SAMPLE_QUANTILE = 0.99  # a sample whose median distance passes this quantile of in-domain ones
_RESAMPLES = 2000
_STEP = 4  # colour features on every 4th pixel: the statistics, at a 16th of the cost
_BORDER = 0.08  # the border ring, as a share of the side: background in a centred crop
COLOUR_FEATURES = ("mean_r", "mean_g", "mean_b", "sd_r", "sd_g", "sd_b", "border_r",
                   "border_g", "border_b", "stained_share", "stained_r", "stained_g",
                   "stained_b")


def stain_threshold(images: np.ndarray) -> float:
    """Otsu's threshold (scikit-image) of blue minus green over the pixels of `images`:
    stained cell parts above it, red cells and plasma below."""
    from skimage.filters import threshold_otsu

    bg = _blue_minus_green(np.asarray(images)[:, ::_STEP, ::_STEP])
    return float(threshold_otsu(bg.ravel())) if bg.size else 0.0


def colour_features(images: np.ndarray, stained_above: float) -> np.ndarray:
    """(N, 13) float64: the colour and size features of uint8 images (N, H, W, 3), in the
    order of COLOUR_FEATURES, values in [0, 1]."""
    small = np.asarray(images)[:, ::_STEP, ::_STEP].astype(np.float32) / 255  # (N, h, w, 3)
    n, h, w, _ = small.shape
    ring = max(1, round(_BORDER * min(h, w)))
    border = np.ones((h, w), dtype=bool)
    border[ring:h - ring, ring:w - ring] = False
    stained = _blue_minus_green(small * 255) > stained_above  # (N, h, w)
    count = stained.sum(axis=(1, 2))
    stained_mean = (small * stained[..., None]).sum(axis=(1, 2)) / np.maximum(count, 1)[:, None]
    return np.column_stack([small.mean(axis=(1, 2)), small.std(axis=(1, 2)),
                            small[:, border].mean(axis=1), count / (h * w),
                            stained_mean]).astype(np.float64)


def _blue_minus_green(pixels: np.ndarray) -> np.ndarray:
    return pixels[..., 2].astype(np.float32) - pixels[..., 1].astype(np.float32)


@dataclass(frozen=True)
class DomainCheck:
    center: np.ndarray  # (k,) feature means of the training cells
    scale: np.ndarray  # (k,) their s.d. (features that do not vary: 1)
    precision: np.ndarray  # (k, k) inverse Ledoit-Wolf covariance of standardised features
    stained_above: float  # blue - green threshold of "stained" pixels
    held_out: np.ndarray  # sorted distances of held-out in-domain cells
    n_fit: int

    @property
    def cell_limit(self) -> float:
        """Distance beyond which a cell is outside: CELL_QUANTILE of the held-out cells."""
        return float(np.quantile(self.held_out, CELL_QUANTILE, method="higher"))

    def distances(self, images: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each cell (uint8 images and the model's hidden layer)."""
        return self._distance(features(images, hidden, self.stained_above))

    def _distance(self, feats: np.ndarray) -> np.ndarray:
        if feats.shape[1] != len(self.center):
            raise LeukolearnError(f"the domain check has {len(self.center)} features, the "
                                  f"cells {feats.shape[1]}")
        z = (feats - self.center) / self.scale
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, self.precision, z), 0.0))

    def outside(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) > self.cell_limit

    def to_dict(self) -> dict:
        return {"version": VERSION, "center": self.center.tolist(), "scale": self.scale.tolist(),
                "precision": self.precision.tolist(), "stained_above": self.stained_above,
                "held_out": self.held_out.tolist(), "n_fit": self.n_fit,
                "cell_quantile": CELL_QUANTILE, "sample_quantile": SAMPLE_QUANTILE,
                "features": [*COLOUR_FEATURES, f"hidden x {len(self.center) - len(COLOUR_FEATURES)}"]}

    @classmethod
    def from_dict(cls, d: dict) -> "DomainCheck":
        if d.get("version") != VERSION:
            raise LeukolearnError(f"domain check of version {d.get('version')!r}; this "
                                  f"leukolearn reads version {VERSION}")
        return cls(np.asarray(d["center"], float), np.asarray(d["scale"], float),
                   np.asarray(d["precision"], float), float(d["stained_above"]),
                   np.sort(np.asarray(d["held_out"], float)), int(d["n_fit"]))


def features(images: np.ndarray, hidden: np.ndarray, stained_above: float) -> np.ndarray:
    """(N, 13 + hidden) the check's features of cells: colour and size, then hidden layer."""
    return np.column_stack([colour_features(images, stained_above),
                            np.asarray(hidden, dtype=np.float64)])


def fit_domain(train_images: np.ndarray, train_hidden: np.ndarray, held_images: np.ndarray,
               held_hidden: np.ndarray) -> DomainCheck:
    """The check of a model trained on `train_images`, scaled by held-out in-domain cells."""
    from sklearn.covariance import LedoitWolf

    if len(train_images) < 2 or len(held_images) < 1:
        raise LeukolearnError("a domain check needs at least 2 training and 1 held-out cell")
    threshold = stain_threshold(train_images)
    train = features(train_images, train_hidden, threshold)
    center = train.mean(axis=0)
    scale = train.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a feature without spread (a dead hidden unit) adds nothing
    covariance = LedoitWolf().fit((train - center) / scale).covariance_
    check = DomainCheck(center, scale, np.linalg.pinv(covariance), threshold,
                        np.zeros(1), len(train_images))
    held = check._distance(features(held_images, held_hidden, threshold))
    return DomainCheck(center, scale, check.precision, threshold, np.sort(held),
                       len(train_images))


@dataclass(frozen=True)
class SampleDomain:
    n_cells: int
    n_outside: int  # cells beyond the check's cell limit
    median: float  # the sample's median distance
    limit: float  # the median beyond which a sample of this size is outside
    outside: bool  # the sample as a whole lies outside the training domain

    @property
    def share(self) -> float:
        return self.n_outside / self.n_cells if self.n_cells else math.nan


def sample_limit(check: DomainCheck, n_cells: int) -> float:
    """The SAMPLE_QUANTILE of the median distance of `n_cells` in-domain cells, from
    resamples of the N held-out cells. The reference is itself a sample, known only as well
    as N cells show it, so the resamples have n N / (n + N) cells: the variance of a median
    of them is that of the difference of two medians, of n and of N cells (a large sample
    is never held to a finer limit than its lab's N cells can set). The same seed every
    time: one limit per model and sample size."""
    big_n = len(check.held_out)
    m = max(1, round(n_cells * big_n / (n_cells + big_n)))
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(check.held_out, size=(_RESAMPLES, m)), axis=1)
    return float(np.quantile(medians, SAMPLE_QUANTILE))


def sample_domain(check: DomainCheck, distances: np.ndarray) -> SampleDomain:
    """Whether a sample's cells, as a whole, lie outside the training domain: their median
    distance beyond what `sample_limit` allows. A consistent shift (another stain, another
    magnification) moves every cell a little and so the median clearly, while single cells
    of the domain already vary widely."""
    d = np.asarray(distances, dtype=float)
    n = len(d)
    if not n:
        return SampleDomain(0, 0, math.nan, math.nan, False)
    median, limit = float(np.median(d)), sample_limit(check, n)
    return SampleDomain(n, int(check.outside(d).sum()), median, limit, median > limit)


def attach_domain_check(model, train_images: np.ndarray, held_images: np.ndarray) -> bool:
    """Fit the check of `model` (a PaperCNN) on its training cells, scaled by its held-out
    validation cells, and store it in the model's config (saved with its weights). False,
    and no check, when it cannot be fitted (fewer than 2 training or no held-out cells):
    the model then says so wherever it is used, rather than the training failing."""
    from dataclasses import replace

    from leukolearn.training.loop import predict_with_hidden

    try:
        _, hidden_train = predict_with_hidden(model, train_images)
        _, hidden_held = predict_with_hidden(model, held_images)
        check = fit_domain(train_images, hidden_train, held_images, hidden_held)
    except (LeukolearnError, ValueError, np.linalg.LinAlgError):
        return False
    model.config = replace(model.config, extra={**model.config.extra,
                                                DOMAIN_KEY: check.to_dict()})
    return True


def domain_check_of(model) -> DomainCheck | None:
    """The check a model file carries, or None (made by an earlier version, or none could be fitted)."""
    stored = model.config.extra.get(DOMAIN_KEY)
    return None if stored is None else DomainCheck.from_dict(stored)
