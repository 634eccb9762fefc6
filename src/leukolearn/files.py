"""Writing output files: the one atomic write, JSON that never holds NaN, software versions.

Every file leukolearn writes (run directories, model files, CSV, JSON, figures' data)
goes through `atomic_write`: a temporary file beside the target, fsynced, renamed onto
it, then the directory fsynced, so a file is either whole or absent even after a crash
or a power cut, and a failed write leaves no half-written file behind.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` fills a temporary file that then replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written file must not take space or linger
        raise
    fsync_path(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON; NaN and infinities become null (JSON has no NaN)."""
    return write_text(path, to_json(data) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV file; NaN cells are left empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if _is_nan(v) else v for v in row] for row in rows])
    return write_text(path, buf.getvalue())


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
    try:
        fd = os.open(path, os.O_RDONLY)
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
