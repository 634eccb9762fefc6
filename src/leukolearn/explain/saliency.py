"""Saliency maps (Simonyan et al. 2014), as in the paper's Fig 4b, and the shared plumbing
of every explanation: input conversion, target choice, and leaving the model as found.

An explanation is of the pre-softmax score of one class per image (the paper explained
"the network without its softmax"); the default class is the predicted one. LRP lives in
`lrp.py` and returns the same `Attribution`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from leukolearn.errors import LeukolearnError
from leukolearn.training.loop import to_tensor

Target = int | Sequence[int] | np.ndarray | None


@dataclass(frozen=True)
class Attribution:
    maps: np.ndarray  # (N, H, W) one heatmap per image, in the model's dtype (float32)
    target: np.ndarray  # (N,) int64: the class whose score was explained
    score: np.ndarray  # (N,) that pre-softmax score
    raw: np.ndarray | None = None  # (N, 3, H, W) per-channel values, when asked


def as_input(images: np.ndarray | torch.Tensor, like: nn.Module) -> torch.Tensor:
    """uint8 (N, H, W, 3) images or a float (N, 3, H, W) tensor in [0, 1] -> float tensor
    (N, 3, H, W) on the model's device and in its dtype (float64 models explain in float64).
    Tensors of other shapes (N, D) pass unchanged, for small test networks."""
    param = next(like.parameters())
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise LeukolearnError(
                f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        x = to_tensor(images).to(param.dtype) / 255
    elif isinstance(images, torch.Tensor):
        if not images.is_floating_point() or images.ndim < 2:
            raise LeukolearnError(f"a tensor input must be float (N, C, H, W), got {images.dtype} "
                                  f"{tuple(images.shape)}")
        x = images.detach().to(param.dtype)
    else:
        raise LeukolearnError(f"cannot explain a {type(images).__name__}; pass uint8 images")
    return x.to(param.device)


def resolve_target(scores: torch.Tensor, target: Target) -> torch.Tensor:
    """(B,) class indices: the predicted class when `target` is None, else the given one(s)."""
    n, n_classes = scores.shape
    if target is None:
        return scores.argmax(dim=1)
    try:
        t = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,)).copy()
    except ValueError:
        raise LeukolearnError(f"{np.size(target)} targets for {n} images") from None
    t = torch.as_tensor(t, device=scores.device)
    if n and (t.min() < 0 or t.max() >= n_classes):
        raise LeukolearnError(f"target class out of range for {n_classes} classes")
    return t


def batch_targets(target: Target, start: int, stop: int) -> Target:
    """The part of a per-image target array that belongs to images[start:stop]."""
    if target is None or np.ndim(target) == 0:
        return target
    return np.asarray(target)[start:stop]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate in eval mode, then give every submodule back its own training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def saliency(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    target: Target = None,
    *,
    raw: bool = False,
    batch_size: int = 32,
) -> Attribution:
    """|d score_target / d input| maxed over colour channels: maps (N, H, W), bright = relevant.

    The gradient is taken with respect to the network input (pixel / 255). `raw=True` also
    keeps the signed gradient (N, 3, H, W). Only `torch.autograd.grad` with respect to the
    input is called, so no parameter's `.grad` is touched.
    """
    maps, grads, targets, scores = [], [], [], []
    with eval_mode(model), torch.enable_grad():
        for start in range(0, len(images), batch_size):
            x = as_input(images[start:start + batch_size], model).requires_grad_(True)
            out = model(x)  # (B, n_classes), pre-softmax
            t = resolve_target(out.detach(), batch_targets(target, start, start + len(x)))
            score = out.gather(1, t[:, None]).squeeze(1)  # (B,)
            (grad,) = torch.autograd.grad(score.sum(), x)  # images are independent: sum is safe
            maps.append(grad.abs().amax(dim=1).cpu().numpy())  # (B, H, W)
            if raw:
                grads.append(grad.cpu().numpy())
            targets.append(t.cpu().numpy())
            scores.append(score.detach().cpu().numpy())
    return collect_attribution(maps, targets, scores, grads if raw else None)


def collect_attribution(maps, targets, scores, raws) -> Attribution:
    """One `Attribution` from per-batch lists (shared by saliency and LRP)."""
    if not maps:
        raise LeukolearnError("no images to explain")
    return Attribution(
        maps=np.concatenate(maps), target=np.concatenate(targets).astype(np.int64),
        score=np.concatenate(scores), raw=None if raws is None else np.concatenate(raws))
