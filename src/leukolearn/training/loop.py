"""One training of the paper's CNN: optimiser, loss, early stopping, best checkpoint.

Settings follow the authors' scripts (../shared/paper/original-protocol.md): batch 5, at
most 500 epochs, early stopping on validation loss with patience 50 (min_delta 0), the
weights of the lowest validation loss kept; RMSprop lr 1e-3 (Keras: rho 0.9, eps 1e-8
added after the square root, which is also how torch.optim.RMSprop adds it) for binary
tasks, Adam lr 1e-4 for multiclass. One epoch is one pass over the (augmented, possibly
oversampled) training set. Knows nothing about folds: the protocol picks the indices.

Threads: `training.threads` (a fixed count for every CPU training).

The bookkeeping around the epochs -- early stopping, the best weights, the history, the
dead-network check, restart seeds and the TrainResult -- lives here once (`EarlyStopping`,
`train_with_restarts`, `finish`) and `batched.train_many` runs the same code for each
network of its stack: a rule changed here changes both paths, so they cannot drift apart.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from leukolearn.model import kernels
from leukolearn.data.stain import STAIN_KEY, normalise, stain_normalised
from leukolearn.training.augment import (apply_colour, augment_batch, colour_draws,
                                         oversample_indices, random_affine)
from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import ModelConfig, PaperCNN, build_model, widened_filters
from leukolearn.progress import progress_bar
from leukolearn.training.config import TrainConfig
from leukolearn.training.threads import dense_layers_at_fixed_threads, training_threads
from leukolearn.training.head_start import HeadStart, apply_head_start, load_head_start
from leukolearn.training.input_norm import (ChannelStats, channel_stats, fold_into_first_conv,
                                           standardise)
from leukolearn.training.optim import make_optimizer, make_schedule


@dataclass
class TrainResult:
    model: PaperCNN  # holds the best-validation weights, in eval mode, on the CPU
    history: list[dict] = field(default_factory=list)  # epoch, train_loss, val_loss, seconds
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    degenerate: bool = False  # constant predictions on validation: a dead ReLU network
    restarts: int = 0  # dead networks re-initialised before this one (TrainConfig.restarts)
    # How it ran, as recorded with a result (the float sums depend on it): whether the
    # fused C kernels did the conv blocks (train_model on the CPU with kernels enabled;
    # never train_many, whose vmap runs PyTorch's layers), torch's intra-op threads
    # during the training, and the device it trained on ("cpu", "cuda").
    kernels: bool = False
    threads: int | None = None
    device: str = "cpu"


EpochCallback = Callable[[dict], None]

def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LeukolearnError("--device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(device)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, H, W); scaling to [0, 1] happens per batch."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def train_model(
    cells: CellImages,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    config: TrainConfig,
    *,
    seed: int,
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    head: HeadStart | None = None,
) -> TrainResult:
    """Train a fresh network on cells[train_idx], early-stopped on cells[val_idx]. A dead
    network (constant predictions) is trained again from a new initialisation, up to
    `config.restarts` times; the result says how many it took. `config.init_from`: every
    attempt starts from that model's weights (`head_start`; `head`: that file, read)."""
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise LeukolearnError("training and validation sets must not be empty")

    if head is None:  # read once, not per attempt (a caller that read it passes it)
        head = load_head_start(config.init_from, config.freeze_features)
    # Fitted on the training cells; the validation cells are normalised too (data.stain).
    stain, cells, train_idx, val_idx = stain_normalised(config.stain_norm, cells, train_idx,
                                                        val_idx)

    def attempt(_, seeds):
        return [_train_once(cells, train_idx, val_idx, config, seed=seeds[0], progress=progress,
                            on_epoch=on_epoch, head=head)]

    with training_threads(resolve_device(config.device)) as threads:
        result = train_with_restarts([seed], config.restarts, attempt)[0]
    result.threads = threads
    if stain is not None:  # the model applies it to every image it is given from now on
        result.model.config = replace(result.model.config,
                                      extra={**result.model.config.extra, STAIN_KEY: stain})
    return result



def _train_once(cells: CellImages, train_idx: np.ndarray, val_idx: np.ndarray,
                config: TrainConfig, *, seed: int, progress: bool,
                on_epoch: EpochCallback | None, head: HeadStart | None = None) -> TrainResult:
    """One training from the initialisation drawn from `seed` (see `train_model`)."""
    device = resolve_device(config.device)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model_config = ModelConfig(input_size=cells.size, n_classes=cells.n_classes,
                               class_names=cells.class_names, filters=widened_filters(config.width))
    model = apply_head_start(build_model(model_config, init=config.init, seed=seed), head).to(device)
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config)

    if config.oversample_to:
        train_idx = train_idx[oversample_indices(cells.labels[train_idx], config.oversample_to, rng)]
    train_idx = np.sort(train_idx)  # sorted reads are fast on a memory-mapped dataset
    # uint8 on the device once (a 200-image training set is 40 MB); batches index into it.
    x_train = to_tensor(cells.images[train_idx]).to(device)
    y_train = torch.from_numpy(cells.labels[train_idx]).to(device)
    # Validation never changes: normalise it once, not every epoch.
    x_val = (to_tensor(cells.images[val_idx]).float() / 255).to(device)
    norm = channel_stats(cells.images[train_idx]).to(device) if config.input_norm else None
    if norm is not None:
        x_val = standardise(x_val, norm)
    y_val = torch.from_numpy(cells.labels[val_idx]).to(device)
    fused = _use_kernels(device)

    stopping = EarlyStopping(config.patience)
    start = time.perf_counter()
    # The bar runs to max_epochs, so its time left is an upper bound: early stopping ends sooner.
    with progress_bar(enabled=progress, transient=False,
                      extra=("{task.fields[losses]}",)) as bar:
        task = bar.add_task("epoch (ETA at most)", total=config.max_epochs, losses="")
        for _ in range(config.max_epochs):
            t0 = time.perf_counter()
            train_loss = _train_one_epoch(model, optimizer, x_train, y_train, config, generator,
                                          fused, norm)
            val_loss = _loss(model, x_val, y_val, fused)
            if schedule is not None:
                schedule.step(val_loss)
            stop = stopping.update(train_loss, val_loss, time.perf_counter() - t0,
                                   lambda: copy.deepcopy(model.state_dict()))
            record = stopping.history[-1]
            bar.update(task, completed=record["epoch"],
                       losses=f"train {record['train_loss']:.3f}  val {record['val_loss']:.3f}  "
                              f"best@{stopping.best_epoch}")
            if on_epoch is not None:
                on_epoch(stopping.history[-1])
            if stop:
                break
    # The model holds the last epoch's weights: what `finish` keeps when no epoch was best.
    return finish(model, stopping, cells.images[val_idx], time.perf_counter() - start,
                  kernels=fused, device=device, input_norm=norm)


class EarlyStopping:
    """One network's bookkeeping, epoch by epoch: its history, its best validation loss
    and the weights of that epoch, and when to stop (Keras EarlyStopping, min_delta 0).

    `update` takes the epoch's losses and a getter for the network's weights (called only
    on an improvement, so the copy is paid only then) and answers whether to stop.
    A NaN validation loss is never better, so NaN from the first epoch on leaves
    `best_state` None and `best_epoch` 0.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.history: list[dict] = []  # epoch, train_loss, val_loss, seconds
        self.best_loss = float("inf")
        self.best_state: dict | None = None
        self.best_epoch = 0
        self.wait = 0  # epochs since the last improvement

    def update(self, train_loss: float, val_loss: float, seconds: float,
               state: Callable[[], dict]) -> bool:
        epoch = len(self.history) + 1
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                             "seconds": seconds})
        if val_loss < self.best_loss:  # strictly better resets the wait (min_delta 0)
            self.best_loss, self.best_epoch, self.wait = val_loss, epoch, 0
            self.best_state = state()
        else:
            self.wait += 1
        return self.wait >= self.patience


def restart_seed(seed: int, attempt: int) -> int:
    """The seed of a job's attempt: attempt 0 is the job's seed (so restarts=0 reproduces
    the runs stored before restarts existed); attempt k a fresh one derived from both."""
    if attempt == 0:
        return seed
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def train_with_restarts(seeds: Sequence[int], restarts: int,
                        train: Callable[[list[int], list[int]], list[TrainResult]]
                        ) -> list[TrainResult]:
    """One TrainResult per job seed in `seeds`: a job whose network ends dead is trained
    again from `restart_seed(seed, attempt)`, up to `restarts` times.

    `train(jobs, attempt_seeds)` trains the jobs at those positions of `seeds`, each from
    its attempt seed, and returns their results in order; train_model passes one job,
    train_many all the jobs still dead (trained together again). The last attempt's
    result is kept, dead or not, with `restarts` set to the attempts before it.
    """
    results: list[TrainResult | None] = [None] * len(seeds)
    todo = list(range(len(seeds)))
    for attempt in range(restarts + 1):
        for i, result in zip(todo, train(todo, [restart_seed(seeds[i], attempt) for i in todo])):
            result.restarts = attempt
            results[i] = result
        todo = [i for i in todo if results[i].degenerate]
        if not todo:
            break
    return results  # type: ignore[return-value]


def finish(model: PaperCNN, stopping: EarlyStopping, val_images: np.ndarray, seconds: float,
           last_state: dict | None = None, *, kernels: bool = False,
           device: torch.device | str = "cpu", input_norm: ChannelStats | None = None
           ) -> TrainResult:
    """The TrainResult of one training: the best epoch's weights loaded into `model` (or,
    when NaN losses left no best epoch, `last_state`; None: `model` holds the last weights
    already), the model on the CPU in eval mode, and whether it is dead on validation.
    `kernels` and `device`: what the training ran on, recorded with its result;
    `input_norm`: the statistics it standardised its inputs by, folded into the weights."""
    state = stopping.best_state if stopping.best_state is not None else last_state
    if state is not None:
        model.load_state_dict(state)
    if input_norm is not None:
        fold_into_first_conv(model, input_norm)
    model = model.cpu().eval()
    return TrainResult(
        model=model, history=stopping.history, best_epoch=stopping.best_epoch,
        epochs_run=len(stopping.history), seconds=seconds,
        degenerate=is_constant(predict_proba(model, val_images)),
        kernels=kernels, device=str(device),
    )


def predict_proba(model: PaperCNN, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, n_classes) for uint8 images (N, H, W, 3) at the model's size."""
    return predict_with_hidden(model, images, batch_size)[0]


def predict_with_hidden(model: PaperCNN, images: np.ndarray, batch_size: int = 64
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, n_classes), the hidden layer (N, 32)), in one pass."""
    device = next(model.parameters()).device
    fused = _use_kernels(device)
    stain = model.config.extra.get(STAIN_KEY)  # a model trained on normalised stains
    model.eval()
    probs, hidden = [], []
    with torch.inference_mode(), dense_layers_at_fixed_threads(model, device):
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            if stain is not None:
                chunk = normalise(chunk, stain)
            if fused and chunk.dtype == np.uint8:  # the first kernel reads (B, H, W, 3) as is
                # A read-only chunk (memory-mapped cache) is copied: torch warns otherwise.
                chunk = np.ascontiguousarray(chunk) if chunk.flags.writeable else np.array(chunk)
                h = model.embed_fused(torch.from_numpy(chunk))
            else:
                h = model.embed(to_tensor(chunk).to(device).float() / 255)
            probs.append(torch.softmax(model.classifier(h), dim=1).cpu().numpy())
            hidden.append(h.float().cpu().numpy())
    if not probs:
        return (np.zeros((0, model.config.n_classes), dtype=np.float32),
                np.zeros((0, model.config.hidden), dtype=np.float32))
    return np.concatenate(probs), np.concatenate(hidden)


def _use_kernels(device: torch.device) -> bool:
    """The fused C kernels run on the CPU only; elsewhere PyTorch's layers do the work."""
    return device.type == "cpu" and kernels.enabled()


def _train_one_epoch(model, optimizer, x_train, y_train, config, generator, fused,
                     norm: ChannelStats | None = None) -> float:
    model.train()
    order = torch.randperm(len(x_train), generator=generator)
    # Summed on the device, read once per epoch: no host sync per batch (matters on a GPU).
    total = torch.zeros((), dtype=torch.float64, device=x_train.device)
    for start in range(0, len(order), config.batch_size):
        batch = order[start:start + config.batch_size]
        x = _batch(x_train, batch, config, generator, fused)
        if norm is not None:
            x = standardise(x, norm)
        logits = model.forward_fused(x) if fused else model(x)
        loss = F.cross_entropy(logits, y_train[batch], label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(batch)
    return total.item() / len(order)


def _batch(x_train, batch, config: TrainConfig, generator, fused: bool) -> torch.Tensor:
    """Training images `batch` as float / 255, randomly flipped and rotated (and zoomed,
    recoloured: `training.augment`) if `config.augment`.

    Both paths draw the same random numbers (`random_affine`, `colour_draws`) and sample
    the same images; the fused one reads the uint8 images directly and skips the last row
    and column of an odd-sized image, which no conv/pool block reads.
    """
    if not config.augment:
        return x_train[batch].float() / 255
    if fused:
        size = x_train.shape[-1]
        crop = size - size % 2
        theta = random_affine(len(batch), generator, config.scale_jitter)
        x = kernels.augment_uint8(x_train, batch, theta, crop)
    else:
        x = augment_batch(x_train[batch].float() / 255, generator, config.scale_jitter)
    if config.colour_jitter > 0:
        x = apply_colour(x, colour_draws(len(batch), generator, config.colour_jitter))
    return x


def _loss(model, x, y, fused: bool = False, batch_size: int = 128) -> float:
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size]
            logits = model.forward_fused(xb) if fused else model(xb)
            total += F.cross_entropy(logits, y[start:start + batch_size], reduction="sum").item()
    return total / len(x)


def is_constant(probabilities: np.ndarray, tol: float = 1e-6) -> bool:
    """True when a model gives (nearly) the same output for every image: a dead network."""
    return bool(np.all(np.ptp(np.asarray(probabilities), axis=0) < tol))
