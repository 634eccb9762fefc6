"""An on-disk cache of decoded arrays, so a dataset is decoded once.

An entry is a folder of `.npy` files under `$LEUKOLEARN_CACHE` (default
`~/.cache/leukolearn`), named by a key that hashes the *content* of every source file
(not its path or time stamp) together with the input size and the decode and hash policy
versions: a changed file, size or policy gives a new entry, and a moved or copied
dataset still hits.

Hashing every byte of a large dataset on each load would take minutes (12 GB for
AML-Cytomorphology_LMU), so `file_digest` remembers each file's digest in
`digests.sqlite` beside the entries, under the file's (path, size, mtime_ns, ctime_ns,
inode): an unchanged file is read once; a file whose size, time stamps or inode changed,
or one the memo does not know, is hashed again. The key stays the content hash.

Arrays are written row by row into `numpy.lib.format.open_memmap` files, so the dataset
is never held in RAM; the folder is written under a temporary name and renamed into
place (`files.atomic_folder` / `publish_folder`), so a killed or failed load leaves no
half-written entry. A hit
returns read-only memory maps: a dataset larger than RAM still loads, in seconds.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from numpy.lib.format import open_memmap

from leukolearn.errors import BadFileError
from leukolearn.files import atomic_folder, atomic_write, publish_folder

_CHUNK = 1 << 20  # 1 MiB
_ROWS_PER_COPY = 256  # rows copied at a time by entry_rows
_RACY_NS = 2_000_000_000  # files written less than 2 s ago are not remembered


def cache_root() -> Path:
    """Where entries live: $LEUKOLEARN_CACHE, else ~/.cache/leukolearn."""
    env = os.environ.get("LEUKOLEARN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "leukolearn"


def file_digest(path: str | Path) -> str:
    """blake2b of a file's bytes, read in 1 MiB chunks; remembered while the file is
    unchanged (see the module docstring), so a second load reads no image bytes."""
    try:
        before = os.stat(path)
    except OSError as e:
        raise BadFileError(path, f"cannot be read ({e.strerror or e})") from None
    key = _stat_key(path, before)
    memo = _DigestMemo.current()
    if memo is not None and (digest := memo.get(key)) is not None:
        return digest
    digest = _hash_bytes(path)
    if memo is not None:
        try:
            after = os.stat(path)
        except OSError:
            return digest
        # Remember only a file that did not change while it was read and whose time stamp
        # is old enough that a write in the same clock tick cannot hide behind it.
        recent = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) < _RACY_NS
        if _stat_key(path, after) == key and not recent:
            memo.put(key, digest)
    return digest


def _hash_bytes(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise BadFileError(path, f"cannot be read ({e.strerror or e})") from None
    return h.hexdigest()


def _stat_key(path: str | Path, st: os.stat_result) -> tuple:
    # A file name that is not UTF-8 holds lone surrogates, which SQLite refuses: escape them.
    name = os.fsencode(os.path.abspath(path)).decode("utf-8", "backslashreplace")
    return (name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class _DigestMemo:
    """(path, size, mtime_ns, ctime_ns, inode) -> digest in <cache root>/digests.sqlite.

    One connection per process and cache root (a forked worker opens its own); new rows
    are committed in batches, and at exit. Any database problem turns the memo off for
    the process: digests are then computed from the bytes, as without it.
    """

    _open: "_DigestMemo | None" = None
    _broken: set = set()

    def __init__(self, path: Path):
        self.path, self.pid, self.root_env = path, os.getpid(), None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, "
                          "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, "
                          "digest TEXT NOT NULL)")
        self.pending: dict[tuple, str] = {}  # not yet committed
        self.flushed = time.monotonic()

    @classmethod
    def current(cls) -> "_DigestMemo | None":
        memo = cls._open
        # a cheap test first (this runs once per file): has the cache root changed?
        root = (os.environ.get("LEUKOLEARN_CACHE"), os.environ.get("HOME"))
        if memo is not None and memo.root_env == root and memo.pid == os.getpid():
            return memo
        path = cache_root() / "digests.sqlite"
        if memo is not None and memo.pid == os.getpid():
            memo.close()
        cls._open = None
        if path in cls._broken:
            return None
        try:
            cls._open = cls(path)
            cls._open.root_env = root
        except (OSError, sqlite3.Error):
            cls._broken.add(path)
        return cls._open

    def get(self, key: tuple) -> str | None:
        if key in self.pending:
            return self.pending[key]
        try:
            row = self.conn.execute(
                "SELECT digest FROM digests WHERE path=? AND size=? AND mtime_ns=? AND "
                "ctime_ns=? AND inode=?", key).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def put(self, key: tuple, digest: str) -> None:
        self.pending[key] = digest
        if len(self.pending) >= 1000 or time.monotonic() - self.flushed > 5:
            self.flush()

    def flush(self) -> None:
        rows = [(*key, digest) for key, digest in self.pending.items()]
        self.pending, self.flushed = {}, time.monotonic()
        if not rows or self.pid != os.getpid():
            return
        try:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)",
                                      rows)
        except sqlite3.Error:
            pass  # the memo is only a shortcut; the digests are right without it

    def close(self) -> None:
        self.flush()
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


@atexit.register
def _flush_memo() -> None:
    memo = _DigestMemo._open
    if memo is not None and memo.pid == os.getpid():
        memo.close()


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
        self._tmp = atomic_folder(self._base / key)
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
        # An entry is a folder of arrays filled over a whole load: its rename, not any one
        # file's, makes it appear whole. If another process committed the same entry
        # first, publish_folder keeps theirs (the same bytes: the key hashes the content).
        publish_folder(self._tmp, self._base / self.key)
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
        # Parallel sweep workers may write the same subset at once: atomic_write gives
        # each its own temporary file, and the last rename wins with identical bytes.
        def fill(tmp: Path) -> None:
            out = open_memmap(tmp, mode="w+", dtype=source.dtype,
                              shape=(len(index), *source.shape[1:]))
            for start in range(0, len(index), _ROWS_PER_COPY):
                out[start:start + _ROWS_PER_COPY] = source[index[start:start + _ROWS_PER_COPY]]
            out.flush()
            del out  # closes the map before the rename (Windows cannot rename an open file)

        atomic_write(target, fill)
    return np.load(target, mmap_mode="r")
