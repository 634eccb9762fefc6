"""Running a sweep's jobs as Ray tasks (`sweep --executor ray`), on this machine or a cluster.

Ray (ray.io, core only) is a well-kept distributed engine; leukolearn schedules on it
rather than growing its own. It is an optional extra (`pip install "leukolearn[ray]"`),
imported only here and only when asked for.

What stays as with local processes (`experiments.workers`): this process, the driver, is
the only one that writes the run store, job by job as each task returns, so resume, the run
lock, Ctrl-C (finished jobs saved, running tasks cancelled) and kill -9 (the store holds
every job saved before it) behave the same; each task runs the same runner on the same job
with the same seed and the runner's fixed thread count, so its result equals the local
executor's (`tests/test_ray_executor.py`).

Where Ray runs:
- `address=None`: a local Ray is started for the run with `cpus` CPUs and stopped after
  it (Ray's own reaper stops it too when the driver is killed). A Ray this process had
  already started (`ray.init()` from Python) is used as it is and left running.
- `address="ray://host:10001"` or `"host:6379"` (`--ray-address`): an existing cluster;
  every node needs leukolearn installed, as `ray start` documents for any library.

The dataset travels once, not per job: it is put in Ray's object store once and every task
receives a reference (numpy arrays are read from shared memory without a copy). On a local
Ray, an image array memory-mapped from the decode cache travels as its file name instead
(`workers.SharedCells`), so a dataset larger than RAM stays on disk; on a cluster, whose
nodes may not see this machine's files, the arrays themselves go into the object store.

One task trains one job on one CPU, or with `batch_models` K a group of K jobs together
(`TrainingRunner.run_many`); a task of a CUDA training asks Ray for one GPU.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.workers import (INTERRUPTED, WORKER_DIED, SharedCells, attempt,
                                            attempt_many, is_interrupted)

EXECUTORS = ("local", "ray")
INSTALL_HINT = 'pip install "leukolearn[ray]"'
_POLL_SECONDS = 0.5  # ray.wait's timeout: how soon Ctrl-C is noticed while tasks run


def import_ray() -> Any:
    """The `ray` module, or a LeukolearnError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise LeukolearnError(f"--executor ray needs Ray, which is not installed: "
                              f"{INSTALL_HINT}") from None
    return ray


def run_on_ray(cells: CellImages, todo: list, runner: Callable, save: Callable[[Any, Any], None],
               *, cpus: int = 1, address: str | None = None, batch_models: int = 1,
               gpus_per_task: float = 0) -> None:
    """Run every job of `todo` as Ray tasks, calling `save(job, outcome or error message)`
    here as each finishes; KeyboardInterrupt saves what is back, cancels the rest, re-raises.
    `cpus`: the CPUs of a local Ray started for the run (ignored on a cluster)."""
    ray = import_ray()
    started_here = _connect(ray, address, cpus)
    try:
        # A Ray this process started holds only local workers: they can map the cache's files.
        local = address is None
        shared = ray.put(SharedCells(cells if local else _in_memory(cells)))
        task = ray.remote(_train_group).options(num_cpus=1, num_gpus=gpus_per_task,
                                                max_retries=0)
        groups = [todo[i:i + batch_models] for i in range(0, len(todo), batch_models)]
        pending = {task.remote(shared, runner, group): group for group in groups}
        _collect(ray, pending, save)
    finally:
        if started_here:
            ray.shutdown()


def _connect(ray: Any, address: str | None, cpus: int) -> bool:
    """Start or join Ray; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    # No usage report (no internet, and not ours to send); no dashboard (not needed and it
    # costs a process); task logs stay in Ray's session folder, and Ray's start-up notes
    # off the user's screen (its errors still raise).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    settings = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address is None:
            ray.init(num_cpus=cpus, **settings)
        else:
            ray.init(address=address, **settings)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's own words
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise LeukolearnError(f"could not start {where}: {exc}") from None
    return True


def _in_memory(cells: CellImages) -> CellImages:
    """`cells` with memory-mapped arrays read into RAM: they go into Ray's object store."""
    arrays = {f.name: np.asarray(getattr(cells, f.name)) for f in dataclasses.fields(cells)
              if isinstance(getattr(cells, f.name), np.memmap)}
    return dataclasses.replace(cells, **arrays) if arrays else cells


def _collect(ray: Any, pending: dict, save: Callable[[Any, Any], None]) -> None:
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_SECONDS)
            for ref in done:
                group = pending.pop(ref)
                results = _results(ray, ref, len(group))
                if any(is_interrupted(r) for r in results):
                    raise KeyboardInterrupt
                for job, result in zip(group, results):
                    save(job, result)
    except KeyboardInterrupt:
        # Results already computed are worth keeping; the running tasks are stopped.
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0) \
            if pending else ([], [])
        for ref in done:
            group = pending.pop(ref)
            for job, result in zip(group, _results(ray, ref, len(group))):
                if not is_interrupted(result):
                    save(job, result)
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def _results(ray: Any, ref: Any, n: int) -> list:
    """A finished task's results, or its failure as one message per job (the task itself
    records a runner's error per job; what reaches here is Ray's: a worker that died)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError)):
            return [WORKER_DIED] * n
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return [f"{type(exc).__name__}: {first}"] * n


def _train_group(shared: SharedCells, runner: Callable, group: list) -> list:
    """In a Ray worker: the outcomes of `group` (one job, or K trained together)."""
    import torch

    # What the test set's inference runs with; a CPU training fixes its own thread count
    # (training.threads.TRAINING_THREADS), so this cannot change a result.
    torch.set_num_threads(1)
    cells = shared.cells
    try:
        if len(group) == 1:
            return [attempt(runner, cells, group[0])]
        return attempt_many(runner, cells, group)
    except KeyboardInterrupt:  # Ray's cancel, or a runner that raises it
        return [INTERRUPTED] * len(group)
