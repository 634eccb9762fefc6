"""Worker processes for `run_sweep(jobs=N)`: each trains whole jobs; the parent saves them.

The pool is loky's `ProcessPoolExecutor` (a well-kept pool library), not the standard
library's: it starts workers with any start method (fork, spawn, forkserver, and its own
"loky", a fork immediately followed by exec), notices a worker that dies (its job raises
`BrokenProcessPool`, as with the stdlib), and `shutdown(kill_workers=True)` is a public way
to stop workers in the middle of a job, which Ctrl-C needs: the stdlib's executor can only
wait for running jobs to finish (before Python 3.14), and `multiprocessing.Pool`, which can
`terminate()`, never returns the job of a worker that died, so a sweep would hang.

Start method: `fork` on Linux, where the children share the parent's arrays copy-on-write
and start at once (a sweep's parent runs no torch op before its workers start, so no
OpenMP thread pool is forked, which could hang a child); elsewhere loky's own "loky",
which starts a fresh interpreter (fork + exec on macOS, where a bare fork is unsafe; spawn
on Windows) and, unlike spawn, does not run the caller's main script again in each worker.
`LEUKOLEARN_START_METHOD` (or `run_sweep(start_method=...)`) chooses another, e.g. "loky"
on Linux for a process that has trained a network before it starts a sweep.

Without fork, each worker receives the dataset once, in its initializer, never per job;
an image (or mask) array that is a read-only memory map of a file, as the decode cache
hands them out (`data.cache`), travels as its file name and layout and is mapped again
in the worker, so a dataset larger than RAM stays on disk, shared through the page cache.
"""
from __future__ import annotations

import dataclasses
import mmap
import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, wait
from typing import Any, Callable

import numpy as np
from loky import ProcessPoolExecutor
from loky.backend import get_context
from loky.process_executor import BrokenProcessPool

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError

START_METHOD_ENV = "LEUKOLEARN_START_METHOD"
START_METHODS = ("fork", "forkserver", "spawn", "loky")
WORKER_DIED = "a worker process died (out of memory?)"


def default_start_method() -> str:
    """$LEUKOLEARN_START_METHOD, else fork on Linux and loky's own default elsewhere."""
    method = os.environ.get(START_METHOD_ENV, "").strip()
    if method:
        return method
    return "fork" if sys.platform.startswith("linux") else "loky"


def run_parallel(cells: CellImages, todo: list, runner: Callable, jobs: int,
                 save: Callable[[Any, Any], None], start_method: str | None = None) -> None:
    """Run `runner(cells, job)` for every job of `todo` in `jobs` worker processes, calling
    `save(job, outcome or error message)` in this process as each finishes.

    Ctrl-C (KeyboardInterrupt here, or raised by a runner in a worker) saves the results
    already back, kills the workers mid-job and raises KeyboardInterrupt."""
    # A worker's own setting; a CPU training replaces it with its fixed count for its
    # duration (training.threads.TRAINING_THREADS), so it cannot change a result. It is what
    # the test set's inference and a GPU training's CPU work run with.
    threads = max(1, cores() // jobs)
    executor = ProcessPoolExecutor(
        max_workers=jobs, context=_context(start_method or default_start_method()),
        initializer=_init_worker, initargs=(SharedCells(cells), runner, threads),
    )
    pending = {executor.submit(_work, job): job for job in todo}
    interrupted = False
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                result = _result(future)
                if result is _INTERRUPTED_RESULT:
                    raise KeyboardInterrupt
                save(job, result)
    except KeyboardInterrupt:
        interrupted = True
        # Results already computed are worth keeping; the rest is dropped.
        for future, job in list(pending.items()):
            if future.done() and not future.cancelled() and future.exception() is None:
                result = future.result()
                if not is_interrupted(result):
                    save(job, result)
        raise
    finally:
        executor.shutdown(wait=True, kill_workers=interrupted)


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _context(method: str) -> Any:
    if method not in START_METHODS:
        raise LeukolearnError(f"unknown start method {method!r} (${START_METHOD_ENV}); "
                              f"choose from {', '.join(START_METHODS)}")
    try:
        if method == "fork":
            # loky's get_context("fork") only adds a warning against fork in general; the
            # module docstring says why it is right here.
            return multiprocessing.get_context("fork")
        return get_context(method)
    except ValueError:  # fork and forkserver on Windows
        raise LeukolearnError(f"start method {method!r} is not available on this platform; "
                              f"unset ${START_METHOD_ENV} or choose spawn or loky") from None


class SharedCells:
    """A CellImages on its way to a worker. Not pickled at all under fork; otherwise pickled
    once per worker, with each file-backed array as a reference to its file."""

    def __init__(self, cells: CellImages):
        self.cells = cells

    def __reduce__(self) -> tuple:
        fields = {}
        for f in dataclasses.fields(self.cells):
            value = getattr(self.cells, f.name)
            mapped = _MappedArray.of(value)
            fields[f.name] = value if mapped is None else mapped
        return _rebuild_cells, (type(self.cells), fields)


def _rebuild_cells(kind: type, fields: dict) -> SharedCells:
    opened = {name: value.open() if isinstance(value, _MappedArray) else value
              for name, value in fields.items()}
    return SharedCells(kind(**opened))  # the fingerprint travels: nothing is hashed again


@dataclasses.dataclass(frozen=True)
class _MappedArray:
    filename: str
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    order: str

    @classmethod
    def of(cls, array: Any) -> "_MappedArray | None":
        """The reference to `array` if it is a whole read-only map of a file (as
        `np.load(mmap_mode="r")` makes them), else None (a slice of a map, a copy, RAM)."""
        if not (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap)
                and array.mode == "r" and array.filename):
            return None
        order = "C" if array.flags.c_contiguous else "F"
        return cls(str(array.filename), int(array.offset), array.dtype, array.shape, order)

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape, order=self.order)


# ---- in the worker ----------------------------------------------------------------------
_WORKER: tuple[CellImages, Callable] | None = None
INTERRUPTED = "__interrupted__"
_INTERRUPTED_RESULT = object()  # what _result makes of INTERRUPTED, in the parent


def _init_worker(shared: SharedCells, runner: Callable, threads: int) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _WORKER = (shared.cells, runner)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def attempt(runner: Callable, cells: CellImages, job: Any) -> Any:
    """The outcome of `runner(cells, job)`, or its error as one line; KeyboardInterrupt
    passes through."""
    try:
        return runner(cells, job)
    except Exception as exc:  # a failed fit is recorded, the sweep goes on
        return f"{type(exc).__name__}: {exc}"


def attempt_many(runner: Any, cells: CellImages, group: list) -> list:
    """The outcomes of `runner.run_many(cells, group)`, or its error as one line per job:
    the whole group fails together."""
    try:
        return runner.run_many(cells, group)
    except Exception as exc:  # as in attempt: recorded, the sweep goes on
        return [f"{type(exc).__name__}: {exc}"] * len(group)


def _work(job: Any) -> Any:
    assert _WORKER is not None
    try:
        return attempt(_WORKER[1], _WORKER[0], job)
    except KeyboardInterrupt:  # a runner may raise it; SIGINT itself is ignored here
        return INTERRUPTED


def _result(future: Any) -> Any:
    try:
        result = future.result()
    except BrokenProcessPool:  # loky's, a subclass of the stdlib's
        return WORKER_DIED
    return _INTERRUPTED_RESULT if is_interrupted(result) else result


def is_interrupted(result: Any) -> bool:
    return isinstance(result, str) and result == INTERRUPTED
