"""An on-disk cache of decoded arrays, so a dataset is decoded once.

An entry is a folder of `.npy` files under `$LEUKOLEARN_CACHE` (default
`~/.cache/leukolearn`), named by a key that hashes the *content* of every source file
(not its path or time stamp) together with the input size and the decode and hash policy
versions: a changed file, size or policy gives a new entry, and a moved or copied
dataset still hits.

Arrays are written row by row into `numpy.lib.format.open_memmap` files, so the dataset
is never held in RAM; the folder is written under a temporary name and renamed into
place (`os.replace`), so a killed or failed load leaves no half-written entry. A hit
returns read-only memory maps: a dataset larger than RAM still loads, in seconds.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from numpy.lib.format import open_memmap

from leukolearn.errors import BadFileError

_CHUNK = 1 << 20  # 1 MiB
_ROWS_PER_COPY = 256  # rows copied at a time by entry_rows


def cache_root() -> Path:
    """Where entries live: $LEUKOLEARN_CACHE, else ~/.cache/leukolearn."""
    env = os.environ.get("LEUKOLEARN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "leukolearn"


def file_digest(path: str | Path) -> str:
    """blake2b of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise BadFileError(path, f"cannot be read ({e.strerror or e})") from None
    return h.hexdigest()


def content_key(digests: Iterable[str], *settings: object) -> str:
    """The entry name for files with these digests (in order) under these settings."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(settings).encode())
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


def lookup(key: str) -> dict[str, np.ndarray] | None:
    """The arrays of entry `key` as read-only memory maps, or None on a miss."""
    folder = cache_root() / "arrays" / key
    if not folder.is_dir():
        return None
    return {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}


class EntryWriter:
    """Arrays being filled for a new entry; `commit()` makes them the entry `key`.

    Use as a context manager: leaving it without `commit()` (an exception, a bad file)
    deletes the temporary folder, so a failed load writes nothing.
    """

    def __init__(self, key: str, specs: dict[str, tuple[Sequence[int], np.dtype | type]]):
        self.key = key
        self._base = cache_root() / "arrays"
        self._base.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=self._base))
        self.arrays = {
            name: open_memmap(self._tmp / f"{name}.npy", mode="w+", dtype=dtype,
                              shape=tuple(shape))
            for name, (shape, dtype) in specs.items()
        }

    def commit(self) -> dict[str, np.ndarray]:
        """Flush, rename into place, and return the entry as read-only memory maps."""
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()  # close our writable maps before the folder moves
        final = self._base / self.key
        try:
            os.replace(self._tmp, final)
        except OSError:  # another process committed the same entry first: use theirs
            shutil.rmtree(self._tmp, ignore_errors=True)
        entry = lookup(self.key)
        assert entry is not None
        return entry

    def __enter__(self) -> "EntryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.arrays.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)


def entry_rows(key: str, name: str, index: np.ndarray) -> np.ndarray:
    """Rows `index` of array `name` of entry `key`, without loading the array into RAM.

    The rows are copied in chunks into `subsets/` inside the entry (named by the index,
    so each subset is written once) and returned as a read-only memory map.
    """
    index = np.asarray(index, dtype=np.int64)
    folder = cache_root() / "arrays" / key
    source = np.load(folder / f"{name}.npy", mmap_mode="r")
    tag = hashlib.blake2b(index.tobytes(), digest_size=8).hexdigest()
    target = folder / "subsets" / f"{name}-{tag}.npy"
    if not target.exists():
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            out = open_memmap(tmp, mode="w+", dtype=source.dtype,
                              shape=(len(index), *source.shape[1:]))
            for start in range(0, len(index), _ROWS_PER_COPY):
                out[start:start + _ROWS_PER_COPY] = source[index[start:start + _ROWS_PER_COPY]]
            out.flush()
            del out
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return np.load(target, mmap_mode="r")
