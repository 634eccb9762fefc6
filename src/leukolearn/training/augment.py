"""Training-time augmentation, done on whole batches, and class-balanced oversampling.

Matches what the paper's Keras `ImageDataGenerator` did: horizontal and vertical flips,
each with probability 0.5, and a rotation by an angle drawn uniformly from [-359, 359]
degrees (Keras' `rotation_range=359`), bilinear, with 'nearest' fill: pixels rotated in
from outside the image repeat the nearest edge pixel (`padding_mode="border"`).

`augment_batch` is the PyTorch reference; training on the CPU passes the same random
matrices (`random_affine`) to `leukolearn.model.kernels.augment_uint8`, which samples the same
images straight from the uint8 training set.

Beyond the paper (off in its presets, `TrainConfig.scale_jitter` / `colour_jitter`), for
models meant to hold on another lab's images, whose stain and magnification differ:
- scale: each image zoomed by a factor drawn log-uniformly from [1/(1+s), 1+s], in the same
  resampling pass as flip and rotation (the affine matrix);
- colour (`colour_draws`, `apply_colour`): per image a brightness shift, a contrast and a
  saturation factor and a gain per channel, each within the strength (the brightness /
  contrast / saturation jitter of torchvision's ColorJitter, plus channel gains for a
  stain's tint), on the float batch after the resampling.
Their random numbers are drawn after the paper's (flips, angle) and only when switched on,
so the paper's trainings draw exactly what they drew before.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ROTATION_RANGE_DEG = 359.0


def augment_batch(x: torch.Tensor, generator: torch.Generator,
                  scale_jitter: float = 0.0) -> torch.Tensor:
    """Random flips and rotation (and zoom) of each image in x (B, C, H, W) float; returns
    a new tensor."""
    theta = random_affine(x.shape[0], generator, scale_jitter)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_affine(b: int, generator: torch.Generator, scale_jitter: float = 0.0) -> torch.Tensor:
    """(b, 2, 3) float32 affine matrices for `F.affine_grid`: each a random flip and
    rotation, and with `scale_jitter` s > 0 a zoom in [1/(1+s), 1+s].

    The draws (flip_h, flip_v, angle, then the zoom if any; b each, in this order) are the
    whole random part of the resampling, so `leukolearn.model.kernels.augment_uint8` given
    these matrices samples the same images as `augment_batch`.
    """
    flip_h = torch.rand(b, generator=generator) < 0.5
    flip_v = torch.rand(b, generator=generator) < 0.5
    angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(ROTATION_RANGE_DEG)
    # One affine grid per image does flip and rotation in a single resampling pass:
    # [x', y'] = R(angle) @ diag(sx, sy) @ [x, y] in normalised coordinates.
    sx = 1.0 - 2.0 * flip_h.float()
    sy = 1.0 - 2.0 * flip_v.float()
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = cos * sx
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx
    theta[:, 1, 1] = cos * sy
    if scale_jitter > 0:
        # The matrix maps output to input coordinates: sampling a region 1/zoom as wide
        # shows the cell `zoom` times larger.
        log_max = math.log1p(scale_jitter)
        zoom = torch.exp((torch.rand(b, generator=generator) * 2 - 1) * log_max)
        theta[:, :, :2] /= zoom[:, None, None]
    return theta


COLOUR_DRAWS = 6  # brightness, contrast, saturation, and a gain per channel


def colour_draws(b: int, generator: torch.Generator, strength: float) -> torch.Tensor:
    """(b, 6) random colour changes of strength s, drawn after `random_affine`'s: a
    brightness shift in [-s, s], contrast and saturation factors in [1-s, 1+s], and an
    R, G and B gain each in [1-s/2, 1+s/2]."""
    u = torch.rand(b, COLOUR_DRAWS, generator=generator) * 2 - 1  # [-1, 1)
    scale = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5]) * strength
    offset = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    return u * scale + offset


def neutral_colour(b: int) -> torch.Tensor:
    """(b, 6) draws that change nothing (for the padding rows of a batched training)."""
    return torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0]).repeat(b, 1)


def apply_colour(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """x (B, 3, H, W) float in [0, 1] with each image's colour changed by its draws (B, 6):
    contrast about the image's mean, saturation about each pixel's grey, channel gains,
    brightness; clipped to [0, 1]."""
    d = draws.to(x.device, x.dtype)
    brightness, contrast, saturation = (d[:, i, None, None, None] for i in range(3))
    gains = d[:, 3:, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * saturation + grey
    return (x * gains + brightness).clamp_(0.0, 1.0)


def oversample_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Positions into `labels` such that every class appears at least `per_class` times.

    Each class keeps all of its images and is topped up with random repeats (the
    augmentation makes the repeats differ); classes already that large are left alone,
    as the paper only "created" images to balance the training set.
    """
    out = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        extra = max(0, per_class - len(members))
        out.append(members)
        if extra:
            out.append(rng.choice(members, size=extra, replace=True))
    return np.sort(np.concatenate(out))
