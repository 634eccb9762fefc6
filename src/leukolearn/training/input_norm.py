"""Input normalisation while training (`TrainConfig.input_norm`, beyond the paper): each
colour channel standardised by the training images' mean and standard deviation.

Why it is folded away afterwards: the paper's CNN convolves without padding, so a
per-channel affine map of its input is exactly a change of the first convolution's
weights and bias, conv((x - m) / s) = conv'(x). The training sees standardised inputs,
which is what can change the optimisation; the model it leaves is an ordinary PaperCNN
on pixel / 255, so the fused kernels, LRP, the ONNX export and `predict` need nothing new.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from leukolearn.model.cnn import PaperCNN

MIN_STD = 1e-3  # a channel that hardly varies (a blank image set) is not blown up


@dataclass(frozen=True)
class ChannelStats:
    mean: torch.Tensor  # (3,), in pixel / 255 units
    std: torch.Tensor  # (3,)

    def to(self, device: torch.device) -> "ChannelStats":
        return ChannelStats(self.mean.to(device), self.std.to(device))


def channel_stats(images: np.ndarray) -> ChannelStats:
    """Mean and standard deviation per channel of uint8 images (N, H, W, 3), over every pixel."""
    # Summed image by image: a float copy of a whole training set (at 400 px, 200 images:
    # 770 MB in float64) is never made.
    sums, squares, count = np.zeros(3), np.zeros(3), 0
    for image in images:
        pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255
        sums += pixels.sum(axis=0)
        squares += (pixels ** 2).sum(axis=0)
        count += len(pixels)
    mean = sums / count
    std = np.maximum(np.sqrt(np.maximum(squares / count - mean ** 2, 0)), MIN_STD)
    return ChannelStats(torch.tensor(mean, dtype=torch.float32),
                        torch.tensor(std, dtype=torch.float32))


def standardise(x: torch.Tensor, stats: ChannelStats) -> torch.Tensor:
    """x: (B, 3, H, W) float, pixel / 255 -> (x - mean) / std per channel."""
    return (x - stats.mean.view(1, 3, 1, 1)) / stats.std.view(1, 3, 1, 1)


@torch.no_grad()
def fold_into_first_conv(model: PaperCNN, stats: ChannelStats) -> None:
    """Make `model` on pixel / 255 compute what it computed on `standardise`d inputs:
    weights w / s per input channel, bias b - sum(w / s * m)."""
    conv = model.features[0]
    std = stats.std.to(conv.weight.device).view(1, 3, 1, 1)
    mean = stats.mean.to(conv.weight.device).view(1, 3, 1, 1)
    weight = conv.weight / std
    conv.bias -= (weight * mean).sum(dim=(1, 2, 3))
    conv.weight.copy_(weight)
