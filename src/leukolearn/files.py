"""Writing output files: the one atomic write, JSON that never holds NaN, software versions.

Every file leukolearn writes (run directories, model files, CSV, JSON, figures' data,
the cache's subsets, the compiled kernels) goes through `atomic_write`: a temporary file
beside the target, fsynced, renamed onto it, then the directory fsynced, so a file is
either whole or absent even after a crash or a power cut, and a failed write leaves no
half-written file behind. The temporary name is unique to each write
(`.{name}.{pid}-{random}.tmp`, see `temporary_name`), so two processes writing the same
file (parallel sweep workers filling one cache subset, building one kernel library) each
fill their own and the last rename wins. The cache's entries are folders: `atomic_folder`
is the same mechanism for a folder filled over a whole load. A write that fails raises an
OSError whose `filename` is the target (not the temporary file), so the one line the CLI
prints names the file the user asked for.

`check_writable_dir` and `check_new_file` refuse an output that could not be written
before a command does its work (a training, a prediction), so that work is never lost to
a mistyped --out. They raise OSError too (this module sits beside `errors`, not above it);
the CLI turns any OSError into one line.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import platform
import secrets
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` fills a temporary file that then replaces `path` in one rename."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)  # a half-written file must not take space or linger
        except OSError:
            pass  # e.g. the folder is gone or is a file: the error below says why
        _name_target(exc, tmp, path)
        raise
    fsync_path(path.parent)
    return path


def temporary_name(path: str | Path) -> Path:
    """A name beside `path` that no other write uses: `.{name}.{pid}-{random}.tmp`.

    Not created here (unlike tempfile.mkstemp, whose file is mode 0600 and would stay so
    after the rename): the writer creates it, so the result gets the usual permissions.
    The pid and 48 random bits keep two writers, in one process or several, apart; the
    leading dot and `.tmp` let a run directory recognise one left by a killed process
    (`runstore.resume`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")


def atomic_folder(path: str | Path) -> Path:
    """An empty temporary folder beside `path`, to fill and then `publish_folder`.

    For an output that is a folder filled over a long time (a cache entry), where the
    folder's rename, not any one file's, is what makes it appear whole."""
    tmp = temporary_name(path)
    tmp.mkdir(parents=True)
    return tmp


def publish_folder(tmp: Path, path: str | Path) -> bool:
    """Rename the folder `tmp` (from `atomic_folder`) to `path`, its files fsynced first.

    False when `path` already exists (another process published the same folder first:
    a folder cannot replace a non-empty one); `tmp` is then deleted and theirs is kept.
    On any other failure `tmp` is deleted too and the OSError names `path`."""
    path = Path(path)
    try:
        for child in tmp.iterdir():
            if child.is_file():
                fsync_path(child)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and path.is_dir():
            return False
        _name_target(exc, tmp, path)
        raise
    fsync_path(path.parent)
    return True


def _name_target(exc: BaseException, tmp: Path, path: Path) -> None:
    if isinstance(exc, OSError) and (exc.filename is None or Path(exc.filename) == tmp):
        exc.filename = str(path)  # the user never asked for the temporary name


def check_writable_dir(path: str | Path) -> Path:
    """Refuse, before any work, a folder that cannot be created or written: it or a
    folder above it is a file (NotADirectoryError), or the nearest existing folder is
    not writable (PermissionError; a read-only file system counts). Creates nothing.
    The error's filename is `path`; its strerror names the obstacle when that is another."""
    return _check_dir(Path(path), Path(path))


def check_new_file(path: str | Path) -> Path:
    """Refuse, before any work, a file that cannot be written: a folder of that name
    (IsADirectoryError), or a parent `check_writable_dir` refuses. An existing file is
    fine: `atomic_write` replaces it by a rename, which needs its folder only."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    _check_dir(path.parent, path)
    return path


def _check_dir(folder: Path, asked: Path) -> Path:
    def refuse(kind: type[OSError], code: int, problem: str, where: Path) -> OSError:
        # "is a file" of the path asked for, "/x is a file" of a folder above it
        return kind(code, problem if where == asked else f"{where} {problem}", str(asked))

    if folder.exists() and not folder.is_dir():
        raise refuse(NotADirectoryError, errno.ENOTDIR, "is a file, not a folder", folder)
    if not folder.exists() and os.path.lexists(folder):
        raise refuse(FileExistsError, errno.EEXIST, "is a broken link, not a folder", folder)
    existing = folder
    while not existing.exists():  # the folder that mkdir(parents=True) would write into
        existing = existing.parent
    if not existing.is_dir():
        raise refuse(NotADirectoryError, errno.ENOTDIR, "is a file, not a folder", existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = getattr(os, "ST_RDONLY", None)  # not on Windows
        try:
            on_read_only = read_only is not None and bool(os.statvfs(existing).f_flag & read_only)
        except OSError:
            on_read_only = False
        if on_read_only:
            raise refuse(PermissionError, errno.EROFS, "is on a read-only file system", existing)
        raise refuse(PermissionError, errno.EACCES, "is a folder you may not write in", existing)
    return folder


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON; NaN and infinities become null (JSON has no NaN)."""
    return write_text(path, to_json(data) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]], *,
              digits: int | None = None) -> Path:
    """A CSV file as `csv_text` writes it: NaN cells empty, floats to `digits` decimals."""
    return write_text(path, csv_text(header, rows, digits=digits))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], *,
             digits: int | None = None) -> str:
    """CSV text, the one rule for every CSV leukolearn writes: a NaN cell is left empty;
    `digits`: floats (Python or numpy) written with that many decimals, else as str()."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_csv_cell(v, digits) for v in row] for row in rows])
    return buf.getvalue()


def _csv_cell(v: Any, digits: int | None) -> Any:
    if _is_nan(v):
        return ""
    if digits is not None and isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return v


def to_json(data: Any, indent: int | None = 2) -> str:
    return json.dumps(json_safe(data), indent=indent, allow_nan=False)


def json_safe(x: Any, *, keep_nan: bool = False) -> Any:
    """numpy scalars and arrays as Python numbers and lists, NaN and infinities as None
    (`keep_nan`: left as floats, for the run store's histories, which always held them)."""
    if isinstance(x, dict):
        return {k: json_safe(v, keep_nan=keep_nan) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v, keep_nan=keep_nan) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist(), keep_nan=keep_nan)
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not keep_nan and not math.isfinite(x):
        return None
    return x


def fsync_path(path: str | Path) -> None:
    """Flush a file's data, or a directory's entries (so a rename survives a power cut).
    Windows cannot open a directory: there a rename is flushed with its file."""
    # A file is opened for writing: Windows' fsync (FlushFileBuffers) refuses a read-only
    # descriptor with EBADF. A directory can only be opened read-only (POSIX).
    flags = os.O_RDONLY if os.path.isdir(path) else os.O_RDWR
    try:
        fd = os.open(path, flags)
    except (PermissionError, IsADirectoryError):
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def software_versions() -> dict[str, str]:
    """The versions that produced a result, recorded with it."""
    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"leukolearn": pkg("leukolearn"), "torch": pkg("torch"), "numpy": np.__version__,
            "python": platform.python_version()}


def _is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(v)
