"""The torch intra-op thread count of CPU training and inference.

Every CPU training runs with `TRAINING_THREADS` torch intra-op threads, whatever
the caller, `--jobs` or the machine set (`training_threads`): the thread count changes
the float summation order of torch's layers and of the fused kernels (which split a batch
over torch's thread count), and RMSprop carries that difference through hundreds of steps
to the weights (up to 0.18 in a job's AUC between `--jobs 1` and `--jobs 2`). With the
count fixed, a result depends on the config, the data, the device and the kernels only.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from leukolearn.model.cnn import PaperCNN

# One, not "as many as there are cores": a step is a batch of 5 small images, too little
# work to share. Measured on the 2-core development machine: 2.29 ms per image-step with
# 1 thread against 2.55 ms with 2 (and 1.9 against 6.7 ms while other processes were
# busy), so a sweep gets its speed from --jobs, one training per core.
TRAINING_THREADS = 1


@contextlib.contextmanager
def training_threads(device: torch.device) -> Iterator[int]:
    """torch's intra-op threads set to TRAINING_THREADS for a CPU training, the caller's
    count restored afterwards (also after an error or Ctrl-C); yields the count the
    training runs with. On another device the caller's setting is left alone: the
    GPU's sums do not depend on it."""
    before = torch.get_num_threads()
    if device.type != "cpu":
        yield before
        return
    torch.set_num_threads(TRAINING_THREADS)
    try:
        yield TRAINING_THREADS
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def dense_layers_at_fixed_threads(model: PaperCNN, device: torch.device) -> Iterator[None]:
    """In `model`'s forward passes on the CPU within this block, its two dense layers run
    with TRAINING_THREADS threads and the conv blocks with the caller's, so probabilities
    do not depend on the caller's threads and inference keeps their speed.

    Why there: MKL's matrix product picks another kernel for 5 to 11 rows at 2 threads than
    at 1 (the hidden layer's outputs then differ by 1 ulp; measured on torch 2.13 + MKL
    2024.2), while a conv block sums within one image: the fused kernels split the images,
    not the sums, over threads, and torch's layers gave bit-identical maps with 1 to 4."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()

    def pin(*_):
        torch.set_num_threads(TRAINING_THREADS)

    def unpin(*_):
        torch.set_num_threads(before)

    handles = [model.hidden.register_forward_pre_hook(pin),
               model.classifier.register_forward_hook(unpin)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        torch.set_num_threads(before)
