"""The decoded-array cache: hits, misses on changed content, nothing written on failure."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import leukolearn.data.dataset as data
from leukolearn.data import cache
from leukolearn.data.dataset import load_dataset
from leukolearn.errors import BadFileError

SIZE = 40


def _folder(root: Path, cell_image, n: int = 3) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            seed = i if cls == "a" else 100 + i
            Image.fromarray(cell_image(seed, 50, 64)).save(root / cls / f"{i}.png")
    return root


def _entries() -> list[Path]:
    base = cache.cache_root() / "arrays"
    return sorted(p for p in base.iterdir()) if base.exists() else []


def _fail_decoding(monkeypatch) -> None:
    def boom(path):
        raise AssertionError(f"decoded {path} although it is cached")
    monkeypatch.setattr(data, "read_image", boom)


def test_cache_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LEUKOLEARN_CACHE", str(tmp_path / "here"))
    assert cache.cache_root() == tmp_path / "here"
    monkeypatch.delenv("LEUKOLEARN_CACHE")
    assert cache.cache_root() == Path.home() / ".cache" / "leukolearn"


def test_second_load_hits_the_cache_and_is_memory_mapped(tmp_path, cell_image, monkeypatch):
    root = _folder(tmp_path / "ds", cell_image)
    first = load_dataset("folder", root, size=SIZE, progress=False)
    assert len(_entries()) == 1
    _fail_decoding(monkeypatch)
    second = load_dataset("folder", root, size=SIZE, progress=False)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    np.testing.assert_array_equal(first.images, second.images)
    assert first.image_ids == second.image_ids and first.fingerprint == second.fingerprint


def test_uncached_load_equals_cached_and_writes_nothing(tmp_path, cell_image):
    root = _folder(tmp_path / "ds", cell_image)
    plain = load_dataset("folder", root, size=SIZE, cache=False, progress=False)
    assert not isinstance(plain.images, np.memmap) and _entries() == []
    cached = load_dataset("folder", root, size=SIZE, progress=False)
    np.testing.assert_array_equal(plain.images, cached.images)


def test_changed_file_or_size_changes_the_key(tmp_path, cell_image):
    root = _folder(tmp_path / "ds", cell_image)
    before = load_dataset("folder", root, size=SIZE, progress=False)
    Image.fromarray(cell_image(55, 50, 64)).save(root / "a" / "1.png")
    after = load_dataset("folder", root, size=SIZE, progress=False)
    assert len(_entries()) == 2
    assert not np.array_equal(before.images[1], after.images[1])
    np.testing.assert_array_equal(before.images[0], after.images[0])
    load_dataset("folder", root, size=SIZE + 1, progress=False)
    assert len(_entries()) == 3


def test_moved_dataset_still_hits(tmp_path, cell_image, monkeypatch):
    root = _folder(tmp_path / "ds", cell_image)
    load_dataset("folder", root, size=SIZE, progress=False)
    root.rename(tmp_path / "moved")
    _fail_decoding(monkeypatch)
    assert len(load_dataset("folder", tmp_path / "moved", size=SIZE, progress=False)) == 6


def test_failed_load_leaves_no_entry(tmp_path, cell_image):
    root = _folder(tmp_path / "ds", cell_image)
    (root / "b" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(BadFileError, match="9.png"):
        load_dataset("folder", root, size=SIZE, progress=False)
    base = cache.cache_root() / "arrays"
    assert not base.exists() or list(base.iterdir()) == []  # no entry, no temporary folder


def test_deduplicated_rows_stay_memory_mapped(tmp_path, cell_image):
    root = _folder(tmp_path / "ds", cell_image)
    # A copy of a/0.png under its own label (under another it would be a label conflict).
    Image.fromarray(cell_image(0, 50, 64)).save(root / "a" / "copy.png")
    full = load_dataset("folder", root, size=SIZE, dedupe=False, progress=False)
    deduped = load_dataset("folder", root, size=SIZE, progress=False)
    assert len(full) == 7 and len(deduped) == 6 and "a/copy.png" not in deduped.image_ids
    assert isinstance(deduped.images, np.memmap)
    keep = [full.image_ids.index(i) for i in deduped.image_ids]
    np.testing.assert_array_equal(deduped.images, full.images[keep])
    again = load_dataset("folder", root, size=SIZE, progress=False)  # reuses the subset file
    assert again.images.filename == deduped.images.filename


def test_file_digest_and_key():
    here = Path(__file__)
    assert cache.file_digest(here) == hashlib.blake2b(here.read_bytes(), digest_size=20).hexdigest()
    assert cache.content_key(["ab", "cd"], 64) != cache.content_key(["ab", "cd"], 65)
    assert cache.content_key(["ab", "cd"], 64) != cache.content_key(["cd", "ab"], 64)


def test_writer_commit_and_abort(tmp_path):
    specs = {"x": ((3, 2), np.int16)}
    with cache.EntryWriter("k1", specs) as writer:
        writer.arrays["x"][:] = 7
        entry = writer.commit()
    assert (entry["x"] == 7).all() and cache.lookup("k1") is not None
    with cache.EntryWriter("k2", specs) as writer:
        writer.arrays["x"][:] = 1  # left without commit, as on an error
    assert cache.lookup("k2") is None
    with cache.EntryWriter("k1", specs) as writer:  # a second writer of the same entry
        writer.arrays["x"][:] = 7
        assert (writer.commit()["x"] == 7).all()
    assert [p.name for p in _entries()] == ["k1"]


def test_fingerprint_follows_content_not_the_cache(tmp_path, monkeypatch):
    """A cached load derives its fingerprint from the files; a changed file changes it,
    and subsets / relabelling derive theirs from the parent's."""
    from leukolearn.data.dataset import load_dataset
    from leukolearn.data.synthetic import make_binary, write_image_folder

    root = tmp_path / "cells"
    write_image_folder(make_binary(4, size=64, seed=0), root)
    first = load_dataset("folder", root, size=64, progress=False)
    uncached = load_dataset("folder", root, size=64, cache=False, progress=False)
    assert first.fingerprint and uncached.fingerprint  # both fingerprinted, by other routes
    binary = first.binary(["blast"])
    assert binary.fingerprint not in (first.fingerprint, "")
    assert first.subset([0, 1]).fingerprint != first.subset([1, 0]).fingerprint
    victim = sorted((root / "blast").iterdir())[0]
    Image.open(victim).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)  # a changed image
    changed = load_dataset("folder", root, size=64, progress=False)
    assert changed.fingerprint != first.fingerprint
