"""The run directory's writer lock: one process at a time adds jobs to a run.

`filelock` takes an OS lock on RUN/.lock (flock on Linux and macOS, msvcrt locking on
Windows) that the OS releases when the process dies, so a killed sweep never leaves a
stale lock behind and the next resume simply takes it.
"""
from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from leukolearn.errors import LeukolearnError

LOCK_FILE = ".lock"


class RunLock:
    """Held from `acquire` to `release`; a second writer is refused at once."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._lock = FileLock(self.path, timeout=0, thread_local=False)

    def acquire(self) -> "RunLock":
        try:
            self._lock.acquire()
        except Timeout:
            raise LeukolearnError(
                f"{self.path.parent} is being written by another sweep; wait for it to finish "
                "or choose another --out"
            ) from None
        return self

    def release(self) -> None:
        self._lock.release(force=True)

    @property
    def held(self) -> bool:
        return self._lock.is_locked
