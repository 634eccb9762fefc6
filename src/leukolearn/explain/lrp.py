"""Layer-wise relevance propagation (Bach et al. 2015) for the paper's CNN.

The paper (Fig 4b) used the epsilon rule with epsilon = 1 on the network without its
softmax; z+ and alpha-beta are here to check that its conclusions do not hang on the rule.

How it works: one forward pass through the model's layers stores every activation, then
relevance flows back layer by layer. Each Linear/Conv2d layer applies a `Rule`; a rule
computes R_i = x_i * sum_j w_ij * R_j / z_j (the "gradient trick": the sum over j is the
transposed layer, obtained as the gradient of the layer with respect to its input).
  ReLU      passes relevance through unchanged (its input and output carry the same units).
  MaxPool   winner-take-all: a window's relevance goes to the input that won the max in
            the forward pass (the gradient of max-pooling; on ties PyTorch's first argmax).
  Flatten   reshapes the relevance back to the feature-map shape.
The model is never modified: layers are evaluated through `torch.nn.functional` with
detached weights, so no hook is registered and no parameter gets a `.grad`; the model is
called once, on the first batch, only to check that its layers in sequence give its output.

Why not captum's `LRP`: it wants a rule attached to every module (Flatten included), adds
attributes and hooks to the modules while it runs, and its max-pool handling goes through
autograd hooks that are fragile across torch versions; the rules below are a few lines each
and are tested against an explicit loop implementation (tests/test_lrp.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leukolearn.errors import LeukolearnError
from leukolearn.explain.saliency import (Attribution, Target, as_input, batch_targets, collect_attribution, resolve_target)
from leukolearn.model.cnn import PaperCNN

STABILIZER = 1e-9  # keeps z+ / z- denominators off zero; a unit with no contributions passes 0


# --------------------------------------------------------------------------- rules


class Rule:
    """Redistributes the relevance `r` (B, out...) of a Linear/Conv2d layer over its input
    `x` (B, in...); returns relevance shaped like `x`."""

    def relevance(self, layer: nn.Module, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(Rule):
    """z_ij = x_i w_ij, z_j = sum_i z_ij + b_j; R_i = sum_j z_ij / (z_j + eps sign z_j) R_j.
    The bias (as in iNNvestigate) and epsilon absorb some relevance: not conservative."""

    epsilon: float = 1.0

    def relevance(self, layer, x, r):
        w, b = _params(layer)
        z = _affine(layer, x, w, b)
        s = r / (z + self.epsilon * _sign(z))
        return x * _transpose(layer, x, w, s)


@dataclass(frozen=True)
class ZPlus(Rule):
    """Montavon et al. 2017: only positive contributions (x_i w_ij)^+, biases ignored:
    R_i = sum_j (x_i w_ij)^+ / sum_i (x_i w_ij)^+ R_j. Conservative wherever a unit has a
    positive contribution. Equals AlphaBeta(1, 0) when the biases are zero."""

    def relevance(self, layer, x, r):
        w, _ = _params(layer)
        return _share(layer, [(x.clamp(min=0), w.clamp(min=0)), (x.clamp(max=0), w.clamp(max=0))],
                      None, r)


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """R_i = sum_j (alpha z_ij^+ / z_j^+ - beta z_ij^- / z_j^-) R_j with z_j^+ = sum_i
    (x_i w_ij)^+ + b_j^+ (and likewise for the negative part, as in iNNvestigate).
    With alpha - beta = 1 and zero biases the relevance is conserved."""

    alpha: float = 2.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0:
            raise LeukolearnError("alpha and beta must be non-negative")

    def relevance(self, layer, x, r):
        w, b = _params(layer)
        xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
        bp, bn = (None, None) if b is None else (b.clamp(min=0), b.clamp(max=0))
        out = self.alpha * _share(layer, [(xp, wp), (xn, wn)], bp, r)
        if self.beta:
            out = out - self.beta * _share(layer, [(xp, wn), (xn, wp)], bn, r)
        return out


@dataclass(frozen=True)
class ZBox(Rule):
    """For the first layer, inputs bounded in [low, high] (pixels: [0, 1]); Montavon et al.
    2017: z_ij = x_i w_ij - low w_ij^+ - high w_ij^-, biases ignored."""

    low: float = 0.0
    high: float = 1.0

    def relevance(self, layer, x, r):
        w, _ = _params(layer)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        lo, hi = torch.full_like(x, self.low), torch.full_like(x, self.high)
        z = _affine(layer, x, w, None) - _affine(layer, lo, wp, None) - _affine(layer, hi, wn, None)
        s = r / (z + STABILIZER * _sign(z))
        return (x * _transpose(layer, x, w, s) - lo * _transpose(layer, lo, wp, s)
                - hi * _transpose(layer, hi, wn, s))


@dataclass(frozen=True)
class Flat(Rule):
    """For the first layer: each output's relevance spread evenly over its receptive field
    (z_ij = 1); shows where relevance arrives, not which pixel values caused it."""

    def relevance(self, layer, x, r):
        w, _ = _params(layer)
        ones, w1 = torch.ones_like(x), torch.ones_like(w)
        return _transpose(layer, ones, w1, r / _affine(layer, ones, w1, None))


RULES: dict[str, Rule] = {
    "epsilon": Epsilon(1.0),  # the paper's rule
    "zplus": ZPlus(),
    "alpha2beta1": AlphaBeta(2.0, 1.0),
    "alpha1beta0": AlphaBeta(1.0, 0.0),
}
FIRST_RULES: dict[str, Rule | None] = {"same": None, "zbox": ZBox(0.0, 1.0), "flat": Flat()}


def get_rule(name: str | Rule, registry: dict | None = None) -> Rule | None:
    """A rule object from its registry name (`RULES`, or `FIRST_RULES` if passed)."""
    registry = RULES if registry is None else registry
    if not isinstance(name, str):
        return name
    if name not in registry:
        raise LeukolearnError(f"unknown LRP rule {name!r}; choose from {', '.join(registry)}")
    return registry[name]


# --------------------------------------------------------------------------- the pass


def lrp(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    target: Target = None,
    *,
    rule: str | Rule = "epsilon",
    first_rule: str | Rule | None = None,
    raw: bool = False,
    batch_size: int = 16,
) -> Attribution:
    """Relevance of each pixel for the pre-softmax score of `target` (default: predicted class).

    maps (N, H, W): relevance summed over colour channels, signed (positive = speaks for the
    class; the paper's red). `first_rule` ("zbox", "flat" or a Rule) replaces `rule` in the
    first Conv/Linear layer. `raw=True` keeps the per-channel relevance (N, 3, H, W).
    """
    rule = get_rule(rule)
    first = get_rule("same" if first_rule is None else first_rule, FIRST_RULES) or rule
    layers = _layers(model)
    first_affine = next(i for i, m in enumerate(layers) if isinstance(m, (nn.Linear, nn.Conv2d)))
    maps, raws, targets, scores = [], [], [], []
    for start in range(0, len(images), batch_size):
        x = as_input(images[start:start + batch_size], model)  # (B, 3, H, W)
        with torch.no_grad():
            acts = [x]
            for layer in layers:
                acts.append(_forward(layer, acts[-1]))
            out = acts[-1]  # (B, n_classes), pre-softmax
            if start == 0 and not torch.allclose(out, model(x), rtol=1e-4, atol=1e-5):
                raise LeukolearnError("the model's forward is not the sequence of its layers; "
                                      "LRP does not know this architecture")
        t = resolve_target(out, batch_targets(target, start, start + len(x)))
        score = out.gather(1, t[:, None])  # (B, 1)
        r = torch.zeros_like(out).scatter_(1, t[:, None], score)  # only the target class
        for i in reversed(range(len(layers))):
            r = _backward(layers[i], acts[i], r, first if i == first_affine else rule)
        maps.append((r.sum(dim=1) if r.ndim == 4 else r).cpu().numpy())  # (B, H, W)
        if raw:
            raws.append(r.cpu().numpy())
        targets.append(t.cpu().numpy())
        scores.append(score.squeeze(1).cpu().numpy())
    return collect_attribution(maps, targets, scores, raws if raw else None)


def _layers(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, PaperCNN):
        mods = [*model.features, model.flatten, model.hidden, model.hidden_act, model.classifier]
    elif isinstance(model, nn.Sequential):
        mods = [m for m in model.modules() if not isinstance(m, nn.Sequential)]
    else:
        raise LeukolearnError(f"LRP knows PaperCNN and nn.Sequential, not {type(model).__name__}")
    for m in mods:
        if not isinstance(m, (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)):
            raise LeukolearnError(f"LRP has no rule for a {type(m).__name__} layer")
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise LeukolearnError("LRP supports zero-padded convolutions only")
    return mods


def _forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        return _affine(layer, x, *_params(layer))
    if isinstance(layer, nn.ReLU):
        return F.relu(x)
    if isinstance(layer, nn.MaxPool2d):
        return _pool(layer, x)
    return x.flatten(layer.start_dim, layer.end_dim)  # nn.Flatten


def _backward(layer: nn.Module, x: torch.Tensor, r: torch.Tensor, rule: Rule) -> torch.Tensor:
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        return rule.relevance(layer, x, r)
    if isinstance(layer, nn.ReLU):
        return r
    if isinstance(layer, nn.MaxPool2d):  # winner-take-all = the gradient of the max
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(_pool(layer, x), x, grad_outputs=r)
        return g
    return r.reshape(x.shape)  # nn.Flatten


def _pool(layer: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                        ceil_mode=layer.ceil_mode)


def _params(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    # detached: relevance never builds a graph through (or writes a .grad to) the model
    return layer.weight.detach(), None if layer.bias is None else layer.bias.detach()


def _affine(layer, x, w, b):
    if isinstance(layer, nn.Linear):
        return F.linear(x, w, b)
    return F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)


def _transpose(layer, x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """sum_j w_ij s_j for every input i: the gradient of the (bias-free) layer at x."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (c,) = torch.autograd.grad(_affine(layer, x, w, None), x, grad_outputs=s)
    return c


def _sign(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)  # sign(0) = +1, so z + eps*sign never 0


def _share(layer, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], bias, r) -> torch.Tensor:
    """r redistributed in proportion to the same-signed contributions x*w of `pairs`."""
    z = sum(_affine(layer, x, w, None) for x, w in pairs)
    if bias is not None:
        z = z + (bias if isinstance(layer, nn.Linear) else bias[:, None, None])
    s = r / (z + STABILIZER * _sign(z))
    return sum(x * _transpose(layer, x, w, s) for x, w in pairs)
