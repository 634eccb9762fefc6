"""Fuzzing the readers of untrusted files with hypothesis (bounded here; fuzz/fuzz_loaders.py
runs the same properties for minutes).

- read_image on random bytes and on mutated PNG, JPEG, TIFF (plain, zlib, planar, 16-bit,
  float), BMP and GIF files: only a `BadFileError` naming the file (one line) or a uint8
  (H, W, 3) array may come out, and the array must fit to the model's square input.
- the manifest parser on CSV-shaped and raw text: a `LeukolearnError` or a listing whose
  every entry is an existing file inside the manifest's folder, with unique ids.
- the ALL-IDB2 label-table parser: a `LeukolearnError` or a label for every image.
- load_model on mutated model files: a `BadFileError`, or a model with exactly the saved
  weights (a changed weight byte must never load).
"""
from __future__ import annotations

import atexit
import csv
import io
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leukolearn.data.decode import fit_to_square, read_image
from leukolearn.data.loaders import list_all_idb2, list_manifest
from leukolearn.errors import BadFileError, LeukolearnError

EXAMPLES = 60  # per property in the default suite; fuzz/fuzz_loaders.py runs far more
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.data_too_large])


@lru_cache(maxsize=None)
def workdir() -> Path:
    """A scratch folder for the files under test (hypothesis runs outside pytest's fixtures)."""
    path = Path(tempfile.mkdtemp(prefix="leukolearn-fuzz-"))
    atexit.register(shutil.rmtree, path, True)
    return path


# ---- images --------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def seed_images() -> tuple[bytes, ...]:
    """Small valid files of every format and layout the decoder handles."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    out = []
    for fmt, mode in (("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"),
                      ("JPEG", "RGB"), ("BMP", "RGB"), ("GIF", "P")):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, fmt)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(buf, "PNG")  # 16-bit PNG
    out.append(buf.getvalue())
    for array, kw in ((rgb, {}), (rgb, {"compression": "zlib"}),
                      (np.moveaxis(rgb, -1, 0), {"photometric": "rgb", "planarconfig": "separate"}),
                      (rgb.astype(np.uint16) * 257, {}),
                      (rgb.astype(np.float32) / 255, {"photometric": "rgb"})):
        buf = io.BytesIO()
        tifffile.imwrite(buf, array, **kw)
        out.append(buf.getvalue())
    return tuple(out)


@st.composite
def mutated(draw, seeds) -> bytes:
    """A seed file with a few bytes flipped, set, inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(("flip", "set", "insert", "delete", "cut", "splat")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF)))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif kind == "cut":
            del data[pos:]
        elif kind == "splat":  # a large number where a size or offset may sit
            data[pos:pos + 4] = draw(st.sampled_from((b"\xff\xff\xff\xff", b"\x00\x00\xff\xff",
                                                      b"\xff\xff\x00\x00", b"\x7f\xff\xff\xff")))
    return bytes(data)


def check_image_bytes(data: bytes) -> None:
    path = workdir() / "image.bin"  # read_image goes by content, never by extension
    path.write_bytes(data)
    try:
        img = read_image(path)
    except BadFileError as e:
        assert e.path == path and e.problem and "\n" not in str(e)
        return
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] >= 1 and img.shape[1] >= 1
    assert img.flags.c_contiguous
    assert fit_to_square(img, 16).shape == (16, 16, 3)


@FUZZ_SETTINGS
@given(st.binary(max_size=2048))
def test_read_image_on_random_bytes(data):
    check_image_bytes(data)


@FUZZ_SETTINGS
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM",
                        b"GIF89a", b"II+\x00"]), st.binary(max_size=512))
def test_read_image_on_random_bytes_behind_a_magic_number(magic, rest):
    check_image_bytes(magic + rest)


@FUZZ_SETTINGS
@given(mutated(seed_images))
def test_read_image_on_mutated_files(data):
    check_image_bytes(data)


# ---- manifests -------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def manifest_folder() -> Path:
    """base/ with a.png, b.png, sub/a.png, a link inside, a link outside, and an outside file."""
    root = workdir() / "manifest"
    (root / "base" / "sub").mkdir(parents=True)
    for rel in ("base/a.png", "base/b.png", "base/sub/a.png", "outside.png"):
        (root / rel).write_bytes(b"not decoded by the parser")
    os.symlink(root / "outside.png", root / "base" / "out.png")
    os.symlink("a.png", root / "base" / "in.png")
    return root / "base"


CELLS = st.one_of(
    st.sampled_from(["a.png", "b.png", "sub/a.png", "./a.png", "sub/../b.png", "../outside.png",
                     "out.png", "in.png", "/etc/passwd", "..", ".", "", " ", "sub", "A.PNG",
                     "blast", "other", "g1", "\x00", "a.png\x00", '"', ",", "\n", "\\a.png"]),
    st.text(max_size=10),
)


@st.composite
def manifests(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # now and then, any bytes at all
        return draw(st.binary(max_size=300))
    header = draw(st.lists(st.sampled_from(["path", "label", "group", "Path", " LABEL ", "x", "",
                                            "path"]), max_size=5))
    rows = draw(st.lists(st.lists(CELLS, max_size=5), max_size=8))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    text = buf.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
    return text.encode(encoding, "surrogatepass")


def check_manifest(data: bytes) -> None:
    base = manifest_folder()
    path = base / "m.csv"
    path.write_bytes(data)
    try:
        listing = list_manifest(path)
    except LeukolearnError as e:
        assert str(e)
        return
    inside = base.resolve()
    ids = [e.image_id for e in listing.entries]
    assert len(set(ids)) == len(ids)
    for entry in listing.entries:
        assert entry.path.is_file() and entry.path.resolve().is_relative_to(inside), entry
        assert entry.label and isinstance(entry.label, str)
    assert listing.class_names == tuple(sorted({e.label for e in listing.entries}))


@FUZZ_SETTINGS
@given(manifests())
def test_manifest_parser(data):
    check_manifest(data)


# ---- ALL-IDB2 label tables -----------------------------------------------------------------
@lru_cache(maxsize=None)
def idb_folder() -> Path:
    root = workdir() / "idb"
    root.mkdir()
    for name in ("Im001_1.png", "Im002_0.png", "Im010_1.tif", "Im011_0.jpg"):
        (root / name).write_bytes(b"listing does not decode")
    return root


ID_CELLS = st.one_of(st.sampled_from(["Im001", "Im002", "im10", "Im0011", "Im001_1", "Im999",
                                      "1", "", "None", "Im", "Im01 "]), st.text(max_size=8))


@st.composite
def label_tables(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    header = draw(st.lists(st.sampled_from(["image id", "cell type", "id", "label", "Image_ID",
                                            "class", "x", ""]), max_size=4))
    rows = draw(st.lists(st.lists(ID_CELLS, max_size=4), max_size=8))
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    return buf.getvalue().encode("utf-8", "surrogatepass")


def check_label_table(data: bytes) -> None:
    root = idb_folder()
    table = workdir() / "types.csv"
    table.write_bytes(data)
    try:
        listing = list_all_idb2(root, label_table=table)
    except LeukolearnError as e:
        assert str(e)
        return
    assert len(listing.entries) == 4  # every image got a cell type
    assert all(e.label and e.label in listing.class_names for e in listing.entries)


@FUZZ_SETTINGS
@given(label_tables())
def test_label_table_parser(data):
    check_label_table(data)


# ---- model files -----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def seed_model() -> tuple[bytes]:
    from leukolearn.model.cnn import ModelConfig, build_model
    from leukolearn.model.weights import save_model

    path = workdir() / "seed.safetensors"
    save_model(build_model(ModelConfig(input_size=190), seed=0), path)
    return (path.read_bytes(),)


@lru_cache(maxsize=None)
def seed_weights() -> dict:
    from leukolearn.model.weights import load_model

    path = workdir() / "seed-check.safetensors"
    path.write_bytes(seed_model()[0])
    return {k: v.clone() for k, v in load_model(path).state_dict().items()}


def check_model_bytes(data: bytes) -> None:
    import torch

    from leukolearn.model.weights import load_model

    path = workdir() / "model.safetensors"
    path.write_bytes(data)
    try:
        model = load_model(path)
    except BadFileError as e:
        assert e.path == path and "\n" not in str(e)
        return
    state = model.state_dict()  # it loaded: then its weights are exactly the saved ones
    assert state.keys() == seed_weights().keys()
    assert all(torch.equal(state[k], v) for k, v in seed_weights().items())


@FUZZ_SETTINGS
@given(mutated(seed_model))
def test_load_model_on_mutated_files(data):
    check_model_bytes(data)


# For fuzz/fuzz_loaders.py: name -> (strategy, property).
TARGETS = {
    "image-random": (st.binary(max_size=4096), check_image_bytes),
    "image-mutated": (mutated(seed_images), check_image_bytes),
    "manifest": (manifests(), check_manifest),
    "label-table": (label_tables(), check_label_table),
    "model": (mutated(seed_model), check_model_bytes),
}


def test_targets_cover_every_property():
    assert {p.__name__ for _, p in TARGETS.values()} == {
        "check_image_bytes", "check_manifest", "check_label_table", "check_model_bytes"}
