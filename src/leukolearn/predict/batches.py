"""Image files through the network in batches: decoded on every CPU while the network runs,
with each model's domain distances from the same pass (`predict_with_domain`)."""
from __future__ import annotations

from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from leukolearn.data.parallel_decode import default_workers, fitted_images
from leukolearn.errors import BadFileError
from leukolearn.model.cnn import PaperCNN
from leukolearn.progress import progress_bar
from leukolearn.training.loop import predict_with_hidden


def predict_paths(model: PaperCNN | Sequence[PaperCNN], paths: list[Path], batch_size: int = 64,
                  progress: bool = True, skip_bad: bool = False) -> np.ndarray:
    """Class probabilities (N, n_classes) for image files, decoded and fitted like training
    data; with several models, their mean. A file that cannot be decoded raises its
    BadFileError, or with `skip_bad` gets a row of NaN (see `predict_with_domain`)."""
    return predict_with_domain(model, paths, None, batch_size, progress, skip_bad)[0]


def predict_with_domain(model: PaperCNN | Sequence[PaperCNN], paths: list[Path],
                        checks: Sequence | None, batch_size: int = 64, progress: bool = True,
                        skip_bad: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """`predict_paths`, and with `checks` (one `analysis.domain.DomainCheck` or None per
    model) each cell's distance to each model's training cells, (N, n_models), NaN where a
    model has no check or a file was skipped; from the same pass over the network.

    Files are decoded on every CPU (`data.parallel_decode`), up to `_AHEAD_BATCHES`
    batches ahead of the network, which runs on the current batch meanwhile at
    `_network_threads` torch threads. The batches are those of a serial loop (batch_size
    paths each, less the bad files), and the probabilities do not depend on torch's
    threads (`training.loop.predict_proba`), so they are what a serial loop computes."""
    models = [model] if isinstance(model, PaperCNN) else list(model)
    size = models[0].config.input_size
    n_classes = models[0].config.n_classes
    out = np.full((len(paths), n_classes), np.nan, dtype=np.float32)
    dist = None if checks is None else np.full((len(paths), len(models)), np.nan)
    workers = default_workers()
    ahead = max(4 * workers, min(_AHEAD_BATCHES * batch_size, _MAX_AHEAD))
    # the bar is transient: an error stays one line
    with progress_bar(enabled=progress) as bar, _torch_threads(_network_threads(workers)), \
            closing(fitted_images(paths, size, workers=workers, in_flight=ahead)) as decoded:
        task = bar.add_task("predicting cells", total=len(paths))
        for start in range(0, len(paths), batch_size):
            stop = min(start + batch_size, len(paths))
            images, rows = [], []
            for i, result in zip(range(start, stop), decoded):  # range first: zip takes no extra
                if isinstance(result, BadFileError):
                    if not skip_bad:
                        raise result
                    continue
                images.append(result)
                rows.append(i)
            if images:
                batch = np.stack(images)  # (B, H, W, 3) uint8
                passes = [predict_with_hidden(m, batch, batch_size=batch_size) for m in models]
                out[rows] = np.mean([probs for probs, _ in passes], axis=0)
                for j, check in enumerate(checks or ()):
                    if check is not None:
                        dist[rows, j] = check.distances(batch, passes[j][1])
            bar.advance(task, stop - start)
    return out, dist


def _network_threads(cpus: int) -> int:
    """Torch threads for the network while `cpus` threads decode: its share of the work.

    Decoding a 360 x 363 JPEG and fitting it to 257 px takes about 4x the CPU of the
    network on it (about 2.0 vs 0.45 ms), so the decode threads keep every CPU busy and the
    network needs about a fifth of them: 1 thread up to 7 CPUs, 2 on 8, 3 on 16. More
    would cost CPU at the kernels' barriers (on 2 cores: 2.61 CPU ms per cell at 1 thread,
    2.68 at 2, measured end to end with benchmarks/bench_predict.py at load 4); fewer
    would make the network the bottleneck on a large machine."""
    return max(1, (cpus + 2) // 5)


_AHEAD_BATCHES = 2  # decoded batches waiting for the network at most
_MAX_AHEAD = 256  # images; bounds the memory a large --batch-size takes


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
