"""Training-time augmentation, done on whole batches, and class-balanced oversampling.

Matches what the paper's Keras `ImageDataGenerator` did: horizontal and vertical flips,
each with probability 0.5, and a rotation by an angle drawn uniformly from [-359, 359]
degrees (Keras' `rotation_range=359`), bilinear, with 'nearest' fill: pixels rotated in
from outside the image repeat the nearest edge pixel (`padding_mode="border"`).

`augment_batch` is the PyTorch reference; training on the CPU passes the same random
matrices (`random_affine`) to `leukolearn.model.kernels.augment_uint8`, which samples the same
images straight from the uint8 training set.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ROTATION_RANGE_DEG = 359.0


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and rotation of each image in x (B, C, H, W) float; returns a new tensor."""
    theta = random_affine(x.shape[0], generator)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_affine(b: int, generator: torch.Generator) -> torch.Tensor:
    """(b, 2, 3) float32 affine matrices for `F.affine_grid`: each a random flip and rotation.

    The draws (flip_h, flip_v, angle; b each, in this order) are the whole random part of
    the augmentation, so `leukolearn.model.kernels.augment_uint8` given these matrices samples
    the same images as `augment_batch`.
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
    return theta


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
