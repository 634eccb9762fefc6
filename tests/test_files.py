"""files.py: the one atomic write (Windows' fsync, unique temporary names, folders), the
temporary names a run directory accepts as its own, and the one NaN rule of CSV files."""
from __future__ import annotations

import errno
import fcntl
import math
import os
from pathlib import Path

import numpy as np
import pytest

from leukolearn import files
from leukolearn.errors import LeukolearnError
from leukolearn.runstore.resume import is_own_file, refuse_foreign


class WindowsOS:
    """files.py's `os` as on Windows: fsync (_commit, FlushFileBuffers) fails with EBADF on
    a descriptor opened read-only, and a directory cannot be opened at all."""

    def __init__(self):
        self.synced: list[int] = []

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return os.open(path, flags, *args, **kwargs)

    def fsync(self, fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.synced.append(fd)
        return os.fsync(fd)


def test_atomic_write_works_with_a_windows_fsync(tmp_path, monkeypatch):
    fake = WindowsOS()
    monkeypatch.setattr(files, "os", fake)
    target = files.write_text(tmp_path / "a.json", "{}\n")
    assert target.read_text() == "{}\n"
    assert fake.synced  # the file was flushed, not skipped
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_the_fake_windows_fsync_refuses_read_only_descriptors(tmp_path):
    # The stand-in above must reject what the old fsync_path did, or the test proves nothing.
    (tmp_path / "f").write_text("x")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="Bad file descriptor"):
            WindowsOS().fsync(fd)
    finally:
        os.close(fd)


def test_a_second_writer_of_the_same_file_does_not_collide(tmp_path):
    """Another write of the same target starting while the first is filling its temporary
    file (parallel sweep workers filling one cache subset) must not take or delete it."""
    target = tmp_path / "subset.npy"
    seen = []

    def outer(tmp: Path) -> None:
        tmp.write_text("outer")
        files.atomic_write(target, lambda other: (seen.append(other), other.write_text("inner")))
        assert tmp.read_text() == "outer"  # the other writer used its own name

    files.atomic_write(target, outer)
    assert target.read_text() == "outer"  # the last rename wins
    assert seen and seen[0] != target and seen[0].parent == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == ["subset.npy"]


def test_temporary_names_are_unique_and_recognisable(tmp_path):
    names = {files.temporary_name(tmp_path / "config.json").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".config.json.") and n.endswith(".tmp") for n in names)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_written_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = files.write_text(tmp_path / "shared.csv", "a\n")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not tempfile's private 0600


def test_a_failed_write_names_the_target_and_leaves_nothing(tmp_path):
    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    with pytest.raises(OSError) as caught:
        files.atomic_write(tmp_path / "out.json", fail)
    assert caught.value.filename == str(tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_published_once_and_the_later_one_is_dropped(tmp_path):
    final = tmp_path / "entry"
    first, second = files.atomic_folder(final), files.atomic_folder(final)
    assert first != second
    (first / "a.npy").write_bytes(b"first")
    (second / "a.npy").write_bytes(b"second")
    assert files.publish_folder(first, final) is True
    assert files.publish_folder(second, final) is False  # another process committed first
    assert (final / "a.npy").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # the loser's folder is gone


def test_a_run_directory_accepts_temporary_files_of_its_own_writes(tmp_path):
    for name in ("config.json", "dataset.json", "versions.json", "summary.csv"):
        files.temporary_name(tmp_path / name).write_text("{")  # a process killed mid-write
    for old in (".config.tmp.json", ".versions.json.tmp"):  # older versions' fixed names
        (tmp_path / old).write_text("{")
    refuse_foreign(tmp_path)  # all its own: no error


@pytest.mark.parametrize("name", [".notes.txt.123-abc.tmp", ".config.json", "config.json.tmp",
                                  ".config.jsonx.1-2.tmp", ".config.json.1-2.tmp.bak"])
def test_other_hidden_files_are_still_foreign(tmp_path, name):
    assert not is_own_file(name)
    (tmp_path / name).write_text("x")
    with pytest.raises(LeukolearnError, match="is not a leukolearn run"):
        refuse_foreign(tmp_path)


def test_csv_leaves_nan_empty_and_rounds_floats_to_digits(tmp_path):
    rows = [["a", 1, math.nan, 0.123456, np.float32(0.5)], ["b", 2, np.float64("nan"), 1.0, 3]]
    assert files.csv_text(["k", "n", "x", "y", "z"], rows, digits=4).splitlines() == [
        "k,n,x,y,z", "a,1,,0.1235,0.5000", "b,2,,1.0000,3"]  # ints stay ints
    assert files.csv_text(["x", "y"], [[math.nan, 0.25]]).splitlines() == ["x,y", ",0.25"]
    path = files.write_csv(tmp_path / "t.csv", ["x", "n"], [[math.nan, 1], [0.5, 2]], digits=2)
    assert path.read_text() == "x,n\n,1\n0.50,2\n"
