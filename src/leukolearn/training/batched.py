"""Training K independent networks in lockstep in one process (one GPU kept busy).

The paper's CNN has ~7k parameters: one training leaves a GPU almost idle. `train_many`
stacks the parameters of K networks (`torch.func.stack_module_state`) and runs them as
one vmapped model (`torch.func.functional_call` under `torch.vmap`, which turns the
convolutions into grouped ones), so each step does the work of K trainings in one call.

Each network stays an independent training, the same as `loop.train_model` with its seed:
  * its initialisation, oversampling, batch order and augmentation come from its own seed
    and its own generators, drawn in the same order as `train_model` draws them;
  * its own optimiser state (RMSprop / Adam written out on stacked tensors, see
    `_Optimizer`);
  * its own early stopping, best-validation weights, history, dead-network check, restart
    seeds and TrainResult: not re-implemented here but loop's own `EarlyStopping` (one per
    network), `train_with_restarts` and `finish`, so the two paths share those rules.

Epochs. All networks run epoch e together. In an epoch there are
max_k ceil(n_k / batch_size) steps; network k takes part in the first ceil(n_k /
batch_size) of them (its own shuffled training set, its last batch possibly smaller) and
its parameters and optimiser state are left unchanged in the others (masked update). So
every network sees exactly one pass over its own training set per epoch. Batches are
padded to batch_size with zero-weight rows so the K batches have one shape.

A network that has early-stopped is dropped from the stack at the end of the epoch (its
parameters and optimiser state are removed, so later steps cost nothing for it; its last
weights are kept first if it never had a best epoch, as `train_model` keeps them).

Equivalence: with `kernels.disabled()` (PyTorch's layers) the losses and weights equal
`train_model`'s up to float rounding (the vmapped, grouped convolutions sum in another
order); tests/test_batched.py checks it.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from leukolearn.training.augment import (apply_colour, colour_draws, neutral_colour,
                                         oversample_indices, random_affine)
from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import ModelConfig, build_model, widened_filters
from leukolearn.training.config import TrainConfig, not_batchable
from leukolearn.training.head_start import (HeadStart, apply_head_start, frozen_names,
                                            load_head_start)
from leukolearn.training.loop import (EarlyStopping, TrainResult, finish, resolve_device, to_tensor,
                                     train_with_restarts)
from leukolearn.training.threads import training_threads

BatchJob = tuple[Sequence[int], Sequence[int], int]  # (train_idx, val_idx, seed)
_VAL_CHUNK = 128


def train_many(cells: CellImages, jobs: Sequence[BatchJob], config: TrainConfig,
               device: str | torch.device | None = None) -> list[TrainResult]:
    """Train one fresh network per (train_idx, val_idx, seed) in `jobs`, all in lockstep.

    Returns one TrainResult per job, in order, as `loop.train_model` would (best-val
    weights, on the CPU, in eval mode). `device`: "cpu" | "cuda" | "auto"; None takes
    `config.device`. `config.restarts` re-trains dead networks, again batched together.
    """
    jobs = [(np.asarray(t), np.asarray(v), int(s)) for t, v, s in jobs]
    if not jobs:
        return []
    why = not_batchable(config)
    if why:
        raise LeukolearnError(f"training several networks at once {why}")
    for train_idx, val_idx, _ in jobs:
        if len(train_idx) == 0 or len(val_idx) == 0:
            raise LeukolearnError("training and validation sets must not be empty")
    dev = device if isinstance(device, torch.device) else resolve_device(device or config.device)
    head = load_head_start(config.init_from, config.freeze_features)  # as train_model: once

    def attempt(todo, seeds):  # the jobs still dead, trained together again
        return _train_once_many(cells, [(jobs[i][0], jobs[i][1], s) for i, s in zip(todo, seeds)],
                                config, dev, head)

    with training_threads(dev) as threads:  # as train_model: a fixed count on the CPU
        results = train_with_restarts([seed for _, _, seed in jobs], config.restarts, attempt)
    for result in results:
        result.threads = threads
    return results


@dataclass
class _Member:
    """One job in the stack: its data on the device, its generator, and its bookkeeping
    (`stopping`, the same class `train_model` uses)."""

    train_pos: torch.Tensor  # rows of the shared image tensor: the sorted training set
    y_train: torch.Tensor
    val_pos: torch.Tensor
    y_val: torch.Tensor
    val_idx: np.ndarray
    generator: torch.Generator
    stopping: EarlyStopping
    last_state: dict | None = None  # set when it stops without a best epoch (NaN losses)
    order: torch.Tensor | None = None


def _train_once_many(cells: CellImages, jobs: list[tuple[np.ndarray, np.ndarray, int]],
                     config: TrainConfig, device: torch.device,
                     head: HeadStart | None = None) -> list[TrainResult]:
    model_config = ModelConfig(input_size=cells.size, n_classes=cells.n_classes,
                               class_names=cells.class_names, filters=widened_filters(config.width))
    # Every image any job reads, once on the device (uint8); jobs index into it.
    used = np.unique(np.concatenate([np.concatenate([t, v]) for t, v, _ in jobs]))
    images = to_tensor(cells.images[used]).to(device)
    labels = torch.from_numpy(cells.labels).to(device)
    where = np.full(len(cells.labels), -1, dtype=np.int64)
    where[used] = np.arange(len(used))

    models, members = [], []
    for train_idx, val_idx, seed in jobs:
        # The same draws, in the same order, as loop._train_once.
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        models.append(apply_head_start(build_model(model_config, init=config.init, seed=seed),
                                       head))
        if config.oversample_to:
            train_idx = train_idx[oversample_indices(cells.labels[train_idx],
                                                     config.oversample_to, rng)]
        train_idx = np.sort(train_idx)
        members.append(_Member(
            train_pos=torch.from_numpy(where[train_idx]).to(device),
            y_train=labels[torch.from_numpy(train_idx).to(device)],
            val_pos=torch.from_numpy(where[val_idx]).to(device),
            y_val=labels[torch.from_numpy(val_idx).to(device)],
            val_idx=val_idx, generator=generator, stopping=EarlyStopping(config.patience)))

    params, _ = stack_module_state(models)
    frozen = frozen_names(head)  # freeze_features: no gradient, never stepped
    params = {k: v.detach().to(device).requires_grad_(k not in frozen) for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def one(p, x):
        return functional_call(base, p, (x,))

    forward = torch.vmap(one)
    optimizer = _Optimizer(params, config)
    active = list(range(len(jobs)))  # members[active[j]] is row j of the stack
    bs = config.batch_size
    start = time.perf_counter()

    for epoch in range(1, config.max_epochs + 1):
        t0 = time.perf_counter()
        group = [members[i] for i in active]
        for m in group:
            m.order = torch.randperm(len(m.train_pos), generator=m.generator)
        steps = max(math.ceil(len(m.train_pos) / bs) for m in group)
        totals = torch.zeros(len(group), dtype=torch.float64, device=device)
        for step in range(steps):
            x, y, w = _train_batch(group, step, bs, images, config, device)
            logits = forward(params, x)  # (K, bs, n_classes)
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none",
                                 label_smoothing=config.label_smoothing)
            ce = ce.view(len(group), bs) * w
            counts = w.sum(1)
            # Per network the mean over its own batch; networks are independent, so the
            # gradient of the sum is each network's own gradient.
            (ce.sum(1) / counts.clamp(min=1)).sum().backward()
            optimizer.step(params, mask=counts > 0)
            totals += ce.detach().sum(1).double()
        train_losses = (totals.cpu() / torch.tensor([len(m.train_pos) for m in group],
                                                   dtype=torch.float64)).tolist()
        val_losses = _val_losses(forward, params, group, images, device)
        seconds = time.perf_counter() - t0
        keep = []
        for row, m in enumerate(group):
            def weights(row=row):
                return {k: v[row].detach().clone() for k, v in params.items()}

            stop = m.stopping.update(train_losses[row], val_losses[row], seconds, weights)
            if not stop and epoch < config.max_epochs:
                keep.append(row)
            elif m.stopping.best_state is None:  # leaves the stack: keep its last weights
                m.last_state = weights()
        if not keep:
            break
        if len(keep) < len(active):  # drop the early-stopped networks from the stack
            index = torch.tensor(keep, device=device)
            params = {k: v.detach()[index].clone().requires_grad_(k not in frozen)
                      for k, v in params.items()}
            optimizer.select(index)
            active = [active[row] for row in keep]
    total_seconds = time.perf_counter() - start

    # kernels=False: vmap runs PyTorch's layers, never the fused kernels (CPU or not).
    return [finish(model, m.stopping, cells.images[m.val_idx], total_seconds, m.last_state,
                   kernels=False, device=device)
            for model, m in zip(models, members)]


def _train_batch(group, step, bs, images, config, device):
    """The step-th batch of every network, padded to bs rows: x (K, bs, 3, H, W) float,
    y (K, bs), w (K, bs) 1 for real rows, 0 for padding (and for a network whose epoch
    has ended: all zeros)."""
    k = len(group)
    pos = torch.zeros(k, bs, dtype=torch.long, device=device)
    y = torch.zeros(k, bs, dtype=torch.long, device=device)
    w = torch.zeros(k, bs, device=device)
    theta = torch.eye(2, 3).repeat(k, bs, 1, 1)  # identity for padding rows
    colour = neutral_colour(k * bs).view(k, bs, -1)
    augment = config.augment
    for row, m in enumerate(group):
        batch = m.order[step * bs:(step + 1) * bs]
        n = len(batch)
        if n == 0:
            continue
        b = batch.to(device)
        pos[row, :n] = m.train_pos[b]
        y[row, :n] = m.y_train[b]
        w[row, :n] = 1
        if augment:  # the same draws, in the same order, as loop._batch
            theta[row, :n] = random_affine(n, m.generator, config.scale_jitter)
            if config.colour_jitter > 0:
                colour[row, :n] = colour_draws(n, m.generator, config.colour_jitter)
    x = images[pos.flatten()].float() / 255
    if augment:
        grid = F.affine_grid(theta.flatten(0, 1).to(device), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if config.colour_jitter > 0:
            x = apply_colour(x, colour.flatten(0, 1))
    return x.view(k, bs, *x.shape[1:]), y, w


def _val_losses(forward, params, group, images, device) -> list[float]:
    """Mean validation cross-entropy of every network on its own validation set."""
    k = len(group)
    n_max = max(len(m.val_pos) for m in group)
    totals = torch.zeros(k, dtype=torch.float64, device=device)
    with torch.no_grad():
        for s in range(0, n_max, _VAL_CHUNK):
            n = min(_VAL_CHUNK, n_max - s)
            pos = torch.zeros(k, n, dtype=torch.long, device=device)
            y = torch.zeros(k, n, dtype=torch.long, device=device)
            w = torch.zeros(k, n, device=device)
            for row, m in enumerate(group):
                part = m.val_pos[s:s + n]
                pos[row, :len(part)] = part
                y[row, :len(part)] = m.y_val[s:s + n]
                w[row, :len(part)] = 1
            x = (images[pos.flatten()].float() / 255).view(k, n, *images.shape[1:])
            logits = forward(params, x)
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            totals += (ce.view(k, n) * w).sum(1).double()
    sizes = torch.tensor([len(m.val_pos) for m in group], dtype=torch.float64)
    return (totals.cpu() / sizes).tolist()


class _Optimizer:
    """RMSprop / Adam on stacked (K, ...) parameters, one independent optimiser per row.

    Both are element-wise, so a single optimiser over the stacked tensors would be exactly
    K independent optimisers -- as long as every network steps every time. Networks whose
    epoch has ended must not step (Adam's moments and step count would still move on a
    zero gradient), so the update is written out here with a per-network `mask`: masked
    rows keep parameters, moments and step count. Formulas as torch.optim's single-tensor
    RMSprop (alpha 0.9, eps after the sqrt) and Adam, which `loop.train_model` uses.
    """

    def __init__(self, params: dict[str, torch.Tensor], config: TrainConfig):
        self.kind, self.lr = config.optimizer, config.lr
        k = next(iter(params.values())).shape[0]
        device = next(iter(params.values())).device
        self.state = {n: [torch.zeros_like(p) for _ in range(1 if self.kind == "rmsprop" else 2)]
                      for n, p in params.items() if p.requires_grad}  # not the frozen
        self.steps = torch.zeros(k, dtype=torch.float64, device=device)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        self.steps += mask.double()
        t = self.steps.clamp(min=1)
        if self.kind == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-8
            step_size = (self.lr / (1 - b1 ** t)).float()
            bc2_sqrt = torch.sqrt(1 - b2 ** t).float()
        for name, p in params.items():
            g = p.grad
            if g is None:  # a frozen parameter (freeze_features): left as it is
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            m = mask.view(shape)
            if self.kind == "rmsprop":
                (sq,) = self.state[name]
                new_sq = sq * 0.9 + g * g * (1 - 0.9)
                new_p = p - self.lr * (g / (new_sq.sqrt() + 1e-8))
                sq.copy_(torch.where(m, new_sq, sq))
            else:
                avg, sq = self.state[name]
                new_avg = avg.lerp(g, 1 - b1)
                new_sq = sq * b2 + g * g * (1 - b2)
                denom = new_sq.sqrt() / bc2_sqrt.view(shape) + eps
                new_p = p - step_size.view(shape) * new_avg / denom
                avg.copy_(torch.where(m, new_avg, avg))
                sq.copy_(torch.where(m, new_sq, sq))
            p.copy_(torch.where(m, new_p, p))
            p.grad = None

    def select(self, index: torch.Tensor) -> None:
        """Keep only the rows `index` (networks still training)."""
        self.state = {n: [s[index].clone() for s in states] for n, states in self.state.items()}
        self.steps = self.steps[index].clone()
