"""Bad input, kind by kind: a one-line message naming the file and the problem, or it loads.

Every kind below is generated into tmp_path and checked through the public API and the
CLI (`leukolearn.cli.main`): a user's mistake gives exit code 2 and one `error:` line (a
`warning:` line may precede it), never a traceback. "Nothing written": no run directory
with a config.json after a refused sweep, no --out folder after a refused train/predict.

| #  | kind                                            | checked with               | expected                                          |
|----|-------------------------------------------------|----------------------------|---------------------------------------------------|
|  1 | truncated JPEG                                  | read_image, inspect, sweep | bad file: "not a readable image (... truncated)"  |
|  2 | truncated TIFF (cut in the pixel data)          | read_image, inspect, sweep | bad file: "not a readable TIFF"                   |
|  3 | TIFF cut inside its header                      | read_image, inspect, sweep | bad file: "not a readable TIFF"                   |
|  4 | TIFF of its first 8 bytes only                  | read_image, inspect, sweep | bad file: "TIFF holds no image"                   |
|  5 | zero-byte file                                  | read_image, inspect, sweep | bad file: "empty file (0 bytes)"                  |
|  6 | text renamed to .tif                            | read_image, inspect, sweep | bad file: "not an image"                          |
|  7 | PNG header claiming 20,000 x 20,000 px          | read_image, inspect, sweep | bad file: "decompression bomb", nothing allocated |
|  8 | TIFF header claiming 20,000 x 20,000 px         | read_image, inspect, sweep | bad file: "decompression bomb", nothing allocated |
|  9 | NaN-filled float TIFF                           | read_image, inspect, sweep | bad file: "NaN or infinite values"                |
| 10 | float TIFF outside [0, 1]                       | read_image, inspect, sweep | bad file: "must lie in [0, 1]"                    |
| 11 | 5-channel TIFF                                  | read_image, inspect, sweep | bad file: "number of channels (5)"                |
| 12 | signed 16-bit TIFF                              | read_image, inspect, sweep | bad file: "unsupported pixel type int16"          |
| 13 | PNG with a damaged chunk (bad CRC)              | read_image, inspect, sweep | bad file: "not an image"                          |
| 14 | symlink loop (loop.png -> loop.png)             | read_image, inspect, sweep | bad file: "Too many levels of symbolic links"     |
| 15 | unreadable file, chmod 000                      | read_image, inspect, sweep | bad file: "Permission denied"; skipped as root    |
| 16 | unreadable file, simulated (open() refused)     | read_image, inspect, sweep | bad file: "Permission denied"                     |
| 17 | 1-channel (gray) PNG                            | read_image, load_dataset   | loads: gray repeated into RGB                     |
| 18 | 2-channel (gray + alpha) PNG                    | read_image, load_dataset   | loads: alpha dropped, gray repeated               |
| 19 | 4-channel RGBA PNG                              | read_image, load_dataset   | loads: alpha dropped                              |
| 20 | 16-bit gray PNG                                 | read_image, load_dataset   | loads: 65535 -> 255                               |
| 21 | 16-bit RGB TIFF                                 | read_image, load_dataset   | loads: 65535 -> 255                               |
| 22 | float32 TIFF in [0, 1]                          | read_image, load_dataset   | loads: x 255                                      |
| 23 | planar (samples-first) RGB TIFF                 | read_image, load_dataset   | loads: same pixels as contiguous                  |
| 24 | non-UTF-8 file name                             | load, RunStore, inspect    | loads; id with \\xNN escapes; storable in SQLite |
| 25 | symlinked folder loop inside a class folder     | inspect                    | not followed, no error                            |
| 26 | duplicate ids: one name in two AML folders      | inspect, sweep             | bad file: "same image id 'MYO0' as <other file>"  |
| 27 | duplicate ids: Im001_1.jpg and Im001_1.tif      | inspect                    | bad file: "same image id 'Im001_1'"               |
| 28 | manifest listing one file twice                 | inspect                    | error naming manifest and row: "listed twice"     |
| 29 | label table naming a missing image              | inspect                    | error naming table and row: "no image 'Im999'"    |
| 30 | label table row without a cell type (short row) | inspect                    | error naming table and row: "no cell type"        |
| 31 | label table that is not UTF-8                   | inspect                    | error naming the table: "not UTF-8 text"          |
| 32 | --positive naming a class the data lacks        | inspect, sweep             | error: "positive class 'NOPE' is not among ..."   |
| 33 | AML folder of an unknown class                  | inspect                    | error naming the folder                           |
| 34 | manifest that is not UTF-8                      | inspect                    | error naming the manifest: "not UTF-8 text"       |
| 35 | manifest without path / label columns           | inspect                    | error naming the manifest                         |
| 36 | a class with one image                          | sweep, train               | error: "has 1 image(s), fewer than the 3 folds"   |
| 37 | a dataset with a single class                   | sweep, train               | error: "class 'other' has no images"              |
| 38 | sizes larger than the training pool             | make_plan, sweep           | error, or (capping presets) one warning + cap     |
| 39 | zero / negative options (17 sweep, 9 train)     | sweep, train               | error naming the option; nothing written          |
| 40 | option of the wrong type (--folds abc)          | sweep                      | usage error, exit 2, no traceback                 |
| 41 | empty dataset folder                            | sweep                      | error: "no images found"                          |
| 42 | --out is a file                                 | sweep                      | error: "is a file, not a run directory"           |
| 43 | --out is a non-empty folder of the user's       | sweep                      | error; the folder is left untouched (no .lock)    |
| 44 | run.sqlite that is not a database               | summary                    | error naming run.sqlite                           |
| 45 | model file truncated                            | load_model, predict        | bad file: "not a readable leukolearn model"       |
| 46 | model file cut inside its header length         | load_model                 | bad file: "not a readable leukolearn model"       |
| 47 | model file of zero bytes                        | load_model                 | bad file: "not a readable leukolearn model"       |
| 48 | model header byte changed                       | load_model                 | bad file: "not a readable leukolearn model"       |
| 49 | model tensor data byte changed                  | load_model, predict        | bad file: "damaged: ... checksum"                 |
| 50 | model from another architecture                 | load_model                 | bad file: "do not match the stored architecture"  |
| 51 | model of another format version                 | load_model                 | bad file: "model format version 3"                |
| 52 | format-2 model without its checksum             | load_model                 | bad file: "checksum of the weights is missing"    |
| 53 | safetensors without leukolearn metadata         | load_model                 | bad file: "not a leukolearn model"                |
| 54 | model config that is not JSON                   | load_model                 | bad file                                          |
| 55 | model config claiming a 10^7 px input           | load_model                 | bad file; nothing allocated (shapes on "meta")    |
| 56 | format-1 model (saved before checksums)         | load_model                 | loads (old runs stay readable)                    |
| 57 | a pickle posing as a model (.safetensors)       | load_model                 | refused; never unpickled (no marker file)         |
| 58 | torch.save files posing as a model (2 kinds)    | load_model                 | refused; never unpickled                          |
| 59 | pickled object array inside run.sqlite          | RunStore.predictions       | refused; never unpickled                          |
| 60 | pickled object array in the decode cache        | cache.lookup               | refused; never unpickled                          |
| 61 | manifest path with ../                          | load_dataset               | refused unless allow_outside_root=True            |
| 62 | manifest with an absolute path                  | load_dataset               | refused unless allow_outside_root=True            |
| 63 | manifest naming a symlink to a file outside     | load_dataset               | refused unless allow_outside_root=True            |
| 64 | manifest path through a symlinked folder        | load_dataset               | refused unless allow_outside_root=True            |

The source is also grepped for torch.load, pickle, allow_pickle=True, eval/exec and yaml.load.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import re
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from leukolearn.data.dataset import inspect_dataset, load_dataset
from leukolearn.data.decode import read_image
from leukolearn.errors import BadFileError, LeukolearnError
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import load_model, save_model
from helpers import run_cli as run

SRC = Path(__file__).resolve().parents[1] / "src" / "leukolearn"


# ---- helpers ---------------------------------------------------------------------------------
def one_error_line(code, err, *needles):
    """Exit 2, no traceback, exactly one `error:` line holding every needle; other lines
    may only be `warning:` lines."""
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and all(l.startswith(("error:", "warning:")) for l in lines), err
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])
    return errors[0]


def noise(seed, h=40, w=40, c=3):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def good_folder(root: Path, counts=(("blast", 6), ("other", 6))) -> Path:
    """Class folders of small random PNGs (no two are near-duplicates)."""
    for k, (name, n) in enumerate(counts):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(noise(100 * k + i)).save(root / name / f"{name}{i}.png")
    return root


SWEEP = ["--preset", "quick", "--folds", "3", "--run-folds", "1", "--sizes", "2", "--size", "190",
         "--max-epochs", "1", "--patience", "1", "--positive", "blast", "--keep-duplicates",
         "--no-progress"]
TRAIN = ["--size", "190", "--positive", "blast", "--max-epochs", "1", "--patience", "1",
         "--train-size", "4", "--val-size", "2", "--test-size", "2", "--keep-duplicates"]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one IFD claims width x height 8-bit gray pixels (400 MB at
    20,000^2) while the file holds 100 bytes of data: a bomb without allocating anything."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
            (273, 4, 200), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else \
            struct.pack("<HHIHH", tag, kind, 1, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(100)


def encoded(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buf, img, **kw)
    else:
        Image.fromarray(img).save(buf, fmt, **kw)
    return buf.getvalue()


# ---- 1-15: files that cannot be used -------------------------------------------------------
def _truncated_jpeg(d):
    data = encoded(noise(1, 64, 64), "JPEG")
    (d / "cut.jpg").write_bytes(data[:len(data) * 6 // 10])
    return d / "cut.jpg"


def _truncated_tiff(d):
    data = encoded(noise(2, 64, 64), "TIFF")
    (d / "cut.tif").write_bytes(data[:len(data) // 2])
    return d / "cut.tif"


def _tiff_cut_in_header(d):
    (d / "head.tif").write_bytes(encoded(noise(3, 64, 64), "TIFF")[:100])
    return d / "head.tif"


def _tiff_magic_only(d):
    (d / "magic.tif").write_bytes(encoded(noise(3, 64, 64), "TIFF")[:8])
    return d / "magic.tif"


def _zero_bytes(d):
    (d / "empty.png").write_bytes(b"")
    return d / "empty.png"


def _text_as_tif(d):
    (d / "notes.tif").write_text("patient 12, smear 3: looks fine\n")
    return d / "notes.tif"


def _png_bomb(d):
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)  # 20,000^2 RGB
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(bytes(1000))) + png_chunk(b"IEND", b""))
    (d / "bomb.png").write_bytes(data)
    return d / "bomb.png"


def _tiff_bomb(d):
    (d / "bomb.tif").write_bytes(tiff_header_only(20000, 20000))
    return d / "bomb.tif"


def _nan_tiff(d):
    tifffile.imwrite(d / "nan.tif", np.full((32, 32), np.nan, np.float32))
    return d / "nan.tif"


def _float_out_of_range(d):
    tifffile.imwrite(d / "hdr.tif", noise(4).astype(np.float32), photometric="rgb")  # 0..255
    return d / "hdr.tif"


def _five_channels(d):
    tifffile.imwrite(d / "five.tif", np.zeros((32, 32, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    return d / "five.tif"


def _signed_16_bit(d):
    tifffile.imwrite(d / "signed.tif", np.zeros((32, 32), np.int16))
    return d / "signed.tif"


def _bad_crc_png(d):
    data = bytearray(encoded(noise(5), "PNG"))
    data[40] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    (d / "crc.png").write_bytes(bytes(data))
    return d / "crc.png"


def _symlink_loop(d):
    os.symlink("loop.png", d / "loop.png")  # a link to itself: ELOOP on every open
    return d / "loop.png"


def _chmod_000(d):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root reading a file "
                    "(the simulated case covers it)")
    Image.fromarray(noise(6)).save(d / "locked.png")
    os.chmod(d / "locked.png", 0)
    return d / "locked.png"


def _simulated_unreadable(d, monkeypatch):
    path = d / "locked.png"
    Image.fromarray(noise(7)).save(path)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    return path


BAD_FILES = {  # kind -> (maker, words the problem must contain)
    "truncated JPEG": (_truncated_jpeg, "truncated"),
    "truncated TIFF": (_truncated_tiff, "not a readable TIFF"),
    "TIFF cut inside its header": (_tiff_cut_in_header, "TIFF"),
    "TIFF of its first 8 bytes only": (_tiff_magic_only, "TIFF holds no image"),
    "zero-byte file": (_zero_bytes, "empty file (0 bytes)"),
    "text renamed to .tif": (_text_as_tif, "not an image"),
    "PNG claiming 20000 x 20000": (_png_bomb, "decompression bomb"),
    "TIFF claiming 20000 x 20000": (_tiff_bomb, "decompression bomb"),
    "NaN-filled float TIFF": (_nan_tiff, "NaN or infinite"),
    "float TIFF outside [0, 1]": (_float_out_of_range, "[0, 1]"),
    "5-channel TIFF": (_five_channels, "number of channels (5)"),
    "signed 16-bit TIFF": (_signed_16_bit, "pixel type int16"),
    "PNG with a damaged chunk": (_bad_crc_png, "not an image"),
    "symlink loop": (_symlink_loop, "symbolic links"),
    "unreadable file (chmod 000)": (_chmod_000, "Permission denied"),
    "unreadable file (simulated)": (_simulated_unreadable, "Permission denied"),
}


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    return good_folder(tmp_path_factory.mktemp("good"))


@pytest.fixture
def folder(base_folder, tmp_path):
    """A fresh copy of the good folder to spoil."""
    return Path(shutil.copytree(base_folder, tmp_path / "data", symlinks=True))


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_named_and_nothing_is_written(kind, folder, tmp_path, capsys, monkeypatch):
    maker, words = BAD_FILES[kind]
    args = (folder / "blast", monkeypatch) if "simulated" in kind else (folder / "blast",)
    path = maker(*args)

    with pytest.raises(BadFileError) as info:  # the API: the decoder's verdict
        read_image(path)
    assert info.value.path == path and words in info.value.problem

    code, out, err = run(["inspect", "folder", folder, "--json"], capsys)  # listed, exit 1
    assert code == 1, err
    bad = json.loads(out)["bad_files"]
    assert [b["path"] for b in bad] == [str(path)] and words in bad[0]["problem"]

    run_dir = tmp_path / "run"  # a sweep stops before writing anything, naming the file
    code, _, err = run(["sweep", "folder", folder, "--out", run_dir, *SWEEP], capsys)
    one_error_line(code, err, path, words)
    assert not (run_dir / "config.json").exists()


def test_failed_train_writes_no_model(folder, tmp_path, capsys):
    path = _truncated_jpeg(folder / "other")
    code, _, err = run(["train", "folder", folder, "--out", tmp_path / "model", *TRAIN], capsys)
    one_error_line(code, err, path, "truncated")
    assert not (tmp_path / "model").exists()


# ---- 16-22: unusual but valid images load correctly -----------------------------------------
def test_unusual_but_valid_images_load(tmp_path):
    rgb = noise(8, 24, 30)
    gray = rgb[:, :, 0].copy()
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(gray).save(d / "gray.png")
    Image.fromarray(np.dstack([gray, 255 - gray]), "LA").save(d / "gray_alpha.png")
    Image.fromarray(np.dstack([rgb, gray]), "RGBA").save(d / "rgba.png")
    g16 = gray.astype(np.uint16) * 257 + 3  # 16-bit values that are not just 8-bit * 257
    Image.fromarray(g16).save(d / "gray16.png")
    tifffile.imwrite(d / "rgb16.tif", rgb.astype(np.uint16) * 257)
    tifffile.imwrite(d / "float.tif", rgb.astype(np.float32) / 255, photometric="rgb")
    tifffile.imwrite(d / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    as_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    expected = {
        "gray.png": as_rgb, "gray_alpha.png": as_rgb, "rgba.png": rgb,
        "gray16.png": np.repeat(np.round(g16 * (255 / 65535)).astype(np.uint8)[:, :, None], 3, 2),
        "rgb16.tif": rgb, "float.tif": rgb, "planar.tif": rgb,
    }
    for name, want in expected.items():
        got = read_image(d / name)
        assert got.dtype == np.uint8 and got.shape == (24, 30, 3), name
        np.testing.assert_array_equal(got, want, err_msg=name)

    # Through a whole load: every kind is an image, none a bad file.
    root = good_folder(tmp_path / "ds", counts=(("other", 3),))
    shutil.copytree(d, root / "blast")
    report = inspect_dataset("folder", root, size=32, progress=False, cache=False)
    assert report["bad_files"] == [] and report["class_counts"]["blast"] == len(expected)
    cells = load_dataset("folder", root, size=32, positive=["blast"], dedupe=False, progress=False)
    assert cells.images.shape == (3 + len(expected), 32, 32, 3)


# ---- 23-24: odd names and links -------------------------------------------------------------
def test_non_utf8_file_name_loads_and_can_be_stored(folder, tmp_path, capsys):
    from leukolearn.runstore.store import DatasetInfo, RunStore

    odd = os.fsencode(folder / "blast") + b"/cell_\xff\xfe.png"
    with open(odd, "wb") as f:
        f.write(encoded(noise(9), "PNG"))
    cells = load_dataset("folder", folder, size=32, positive=["blast"], progress=False)
    assert "blast/cell_\\xff\\xfe.png" in cells.image_ids  # valid text: \xNN escapes
    with RunStore.create_or_resume(tmp_path / "run", config={"x": 1},
                                   dataset=DatasetInfo.from_cells(cells), cells=cells) as store:
        assert "blast/cell_\\xff\\xfe.png" in store.image_ids()
    code, out, err = run(["inspect", "folder", folder, "--json"], capsys)
    assert code == 0 and json.loads(out)["n_images"] == 13, err


def test_symlinked_folder_loop_is_not_followed(folder, capsys):
    os.symlink("..", folder / "blast" / "up")  # blast/up -> the dataset root, a loop
    code, out, err = run(["inspect", "folder", folder, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["n_images"] == 12 and report["bad_files"] == []


# ---- 25-33: listings and tables ---------------------------------------------------------------
def test_duplicate_ids_name_both_files(tmp_path, capsys):
    aml = good_folder(tmp_path / "aml", counts=(("MYO", 5), ("MYB", 5)))
    shutil.copy(aml / "MYO" / "MYO0.png", aml / "MYB" / "MYO0.png")  # id "MYO0" twice
    code, out, err = run(["inspect", "aml-lmu", aml, "--json"], capsys)
    assert code == 1, err
    bad = json.loads(out)["bad_files"]
    assert bad == [{"path": str(aml / "MYO" / "MYO0.png"),
                    "problem": f"same image id 'MYO0' as {aml / 'MYB' / 'MYO0.png'} "
                               "(image ids must be unique: rename or remove one)"}]
    code, _, err = run(["sweep", "aml-lmu", aml, "--out", tmp_path / "run", "--size", "190",
                        "--no-progress"], capsys)
    one_error_line(code, err, aml / "MYO" / "MYO0.png", "same image id 'MYO0'")
    assert not (tmp_path / "run").exists()

    idb = tmp_path / "idb"
    idb.mkdir()
    for i in range(1, 5):
        Image.fromarray(noise(i)).save(idb / f"Im{i:03d}_{i % 2}.jpg")
    tifffile.imwrite(idb / "Im001_1.tif", noise(1))
    code, out, err = run(["inspect", "all-idb2", idb, "--json"], capsys)
    assert code == 1 and "same image id 'Im001_1'" in json.loads(out)["bad_files"][0]["problem"]


@pytest.fixture
def idb(tmp_path):
    """A tiny ALL-IDB2 folder Im001_1 ... Im008_0."""
    root = tmp_path / "idb"
    root.mkdir()
    for i in range(1, 9):
        Image.fromarray(noise(i)).save(root / f"Im{i:03d}_{i % 2}.png")
    return root


TABLE_HEAD = "image id,cell type\n"
TABLE_ROWS = "".join(f"Im{i:03d},T{i % 3}\n" for i in range(1, 9))
BAD_TABLES = {  # kind -> (table bytes, extra options, words of the one error line)
    "label table naming a missing image": (
        (TABLE_HEAD + TABLE_ROWS + "Im999,T1\n").encode(), [], ["row 10", "no image 'Im999'"]),
    "label table row without a cell type": (
        (TABLE_HEAD + TABLE_ROWS.replace("Im004,T1\n", "Im004\n")).encode(), [],
        ["row 5", "no cell type for 'Im004'"]),
    "label table that is not UTF-8": (
        (TABLE_HEAD + TABLE_ROWS).encode() + b"Im009,\xff\xfe\n", [], ["not UTF-8"]),
    "positive class unknown to the table": (
        (TABLE_HEAD + TABLE_ROWS).encode(), ["--positive", "NOPE"],
        ["positive class 'NOPE' is not among the classes"]),
}


@pytest.mark.parametrize("kind", list(BAD_TABLES))
def test_bad_label_table_is_named(kind, idb, tmp_path, capsys):
    data, extra, words = BAD_TABLES[kind]
    table = tmp_path / "types.csv"
    table.write_bytes(data)
    code, _, err = run(["inspect", "all-idb2", idb, "--label-table", table, *extra], capsys)
    line = one_error_line(code, err, *words)
    assert "positive" in kind or str(table) in line


def test_unknown_class_and_bad_manifests_are_named(tmp_path, capsys):
    aml = good_folder(tmp_path / "aml", counts=(("MYO", 3), ("XYZ", 3)))
    code, _, err = run(["inspect", "aml-lmu", aml], capsys)
    one_error_line(code, err, aml / "XYZ", "not an AML-Cytomorphology_LMU class folder")

    root = good_folder(tmp_path / "m")
    manifests = {  # content -> words
        b"path,label\nblast/blast0.png,blast\nblast/blast0.png,blast\n": "row 3: blast/blast0.png is listed twice",
        b"path,label\nblast/bl\xffast0.png,blast\n": "not UTF-8 text",
        b"file,label\nblast/blast0.png,blast\n": "needs columns path and label",
    }
    for k, (content, words) in enumerate(manifests.items()):
        csv_path = root / f"m{k}.csv"
        csv_path.write_bytes(content)
        code, _, err = run(["inspect", "manifest", csv_path], capsys)
        one_error_line(code, err, csv_path, words)


# ---- 34-40: datasets and options a sweep cannot use --------------------------------------------
def test_class_with_one_image_and_single_class_are_refused(tmp_path, capsys):
    one = good_folder(tmp_path / "one", counts=(("blast", 1), ("other", 8)))
    code, _, err = run(["sweep", "folder", one, "--out", tmp_path / "r1", *SWEEP], capsys)
    one_error_line(code, err, "class 'blast' has 1 image(s), fewer than the 3 folds")
    code, _, err = run(["train", "folder", one, "--out", tmp_path / "t1", *TRAIN], capsys)
    one_error_line(code, err, "class 'blast' has 1 image(s)")

    single = good_folder(tmp_path / "single", counts=(("blast", 8),))
    code, _, err = run(["sweep", "folder", single, "--out", tmp_path / "r2", *SWEEP], capsys)
    one_error_line(code, err, "class 'other' has no images")
    code, _, err = run(["sweep", "folder", single, "--out", tmp_path / "r3", *SWEEP,
                        "--positive", "other"], capsys)
    one_error_line(code, err, "positive class 'other' is not among the classes")
    code, _, err = run(["train", "folder", single, "--out", tmp_path / "t2", *TRAIN], capsys)
    one_error_line(code, err, "class 'other' has 0 image(s)")
    for name in ("r1", "r2", "r3", "t1", "t2"):
        assert not (tmp_path / name).exists()


def test_sizes_larger_than_the_pool(base_folder, tmp_path, capsys):
    from leukolearn.experiments.protocol import ProtocolOptions, make_plan

    labels = np.arange(12) % 2
    with pytest.raises(LeukolearnError, match=r"training sizes \[50\] exceed"):
        make_plan("all", labels, ProtocolOptions(folds=3, sizes=(2, 50)))
    with pytest.warns(UserWarning, match=r"capped to the training pool \(4 images\)"):
        plan = make_plan("all", labels, ProtocolOptions(folds=3, sizes=(2, 50), cap_sizes=True))
    assert {job.size for job in plan} == {2, 4}
    code, _, err = run(["sweep", "folder", base_folder, "--out", tmp_path / "r",
                        *SWEEP, "--preset", "paper-aml-binary", "--sizes", "50"], capsys)
    one_error_line(code, err, "too few for 3 disjoint test sets plus 50 training")
    assert not (tmp_path / "r").exists()


BAD_SWEEP_OPTIONS = [  # extra arguments -> words of the one error line
    (["--folds", "0"], "folds must be at least 2"),
    (["--folds", "-3"], "folds must be at least 2"),
    (["--sizes", "0"], "training sizes must be positive"),
    (["--sizes", "-5"], "training sizes must be positive"),
    (["--sizes", "5:10:0"], "--sizes '5:10:0'"),
    (["--max-epochs", "0"], "max-epochs must be at least 1"),
    (["--patience", "0"], "patience must be at least 1"),
    (["--replicates", "0"], "replicates must be at least 1"),
    (["--run-folds", "0"], "run_folds must be between 1"),
    (["--run-folds", "8-3"], "--run-folds '8-3'"),
    (["--run-folds", "x"], "--run-folds 'x'"),
    (["--run-folds", "3,12"], "folds to run must be from 0 to"),
    (["--val-size", "0"], "val_size must be at least 1"),
    (["--test-size", "0"], "test_size must be at least 1"),
    (["--seed", "-1"], "seed must be 0 or more"),
    (["--size", "0"], "size must be a positive number"),
    (["--size", "-5"], "size must be a positive number"),
    (["--size", "5"], "input size 5 px is too small"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs", "-2"], "--jobs must be at least 1"),
    (["--label-smoothing", "0.5"], "label smoothing must be in [0, 0.5)"),
    (["--optimizer", "sgd"], "unknown optimizer 'sgd'"),
    (["--lr", "0"], "learning rate must be positive"),
    (["--lr-schedule", "cosine"], "unknown learning-rate schedule 'cosine'"),
    (["--input-norm", "--init-from", "elsewhere.safetensors"], "--input-norm cannot start from"),
]
BAD_TRAIN_OPTIONS = [
    (["--train-size", "0"], "--train-size must be at least 1"),
    (["--val-size", "0"], "--val-size must be at least 1"),
    (["--test-size", "0"], "--test-size must be at least 1"),
    (["--test-size", "-1"], "--test-size must be at least 1"),
    (["--seed", "-1"], "seed must be 0 or more"),
    (["--max-epochs", "0"], "max-epochs must be at least 1"),
    (["--patience", "-1"], "patience must be at least 1"),
    (["--label-smoothing", "-0.1"], "label smoothing must be in [0, 0.5)"),
    (["--lr-schedule", "step"], "unknown learning-rate schedule 'step'"),
    (["--input-norm", "--init-from", "elsewhere.safetensors"], "--input-norm cannot start from"),
    (["--size", "5"], "input size 5 px is too small"),
]


def test_zero_and_negative_options_are_refused_before_writing(base_folder, tmp_path, capsys):
    for k, (extra, words) in enumerate(BAD_SWEEP_OPTIONS):
        out = tmp_path / f"run{k}"
        code, _, err = run(["sweep", "folder", base_folder, "--out", out, *SWEEP, *extra], capsys)
        one_error_line(code, err, words)
        assert not (out / "config.json").exists(), extra
    for k, (extra, words) in enumerate(BAD_TRAIN_OPTIONS):
        out = tmp_path / f"train{k}"
        code, _, err = run(["train", "folder", base_folder, "--out", out, *TRAIN, *extra], capsys)
        one_error_line(code, err, words)
        assert not out.exists(), extra


def test_wrong_type_empty_folder_and_bad_out(base_folder, tmp_path, capsys):
    code, _, err = run(["sweep", "folder", base_folder, "--out", tmp_path / "r", "--folds",
                        "abc"], capsys)
    assert code == 2 and "Traceback" not in err and "Invalid value for '--folds'" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(["sweep", "folder", tmp_path / "empty", "--out", tmp_path / "r",
                        *SWEEP], capsys)
    one_error_line(code, err, "no images found in")
    (tmp_path / "file").write_text("x")
    code, _, err = run(["sweep", "folder", base_folder, "--out", tmp_path / "file", *SWEEP], capsys)
    one_error_line(code, err, "is a file, not a run directory")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("x")
    code, _, err = run(["sweep", "folder", base_folder, "--out", tmp_path / "mine", *SWEEP], capsys)
    one_error_line(code, err, "is not empty and is not a leukolearn run")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.docx"]  # untouched
    assert not (tmp_path / "r").exists()


def test_damaged_run_database_is_named(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "run.sqlite").write_bytes(b"this is not a database" * 100)
    code, _, err = run(["summary", run_dir], capsys)
    one_error_line(code, err, run_dir / "run.sqlite", "not a readable run database")


# ---- 42-51: model files ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(build_model(ModelConfig(input_size=190), seed=0), path)
    return path


def _header(data: bytes) -> tuple[int, dict]:
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8:8 + n])


def _with_header(data: bytes, header: dict) -> bytes:
    n, _ = _header(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def _with_metadata(data: bytes, **changes) -> bytes:
    _, header = _header(data)
    header["__metadata__"].update(changes)
    return _with_header(data, header)


def _tampered_data(data: bytes) -> bytes:
    b = bytearray(data)
    b[-100] ^= 0x01  # one bit of one weight
    return bytes(b)


def _tampered_header(data: bytes) -> bytes:
    b = bytearray(data)
    b[20] ^= 0x55
    return bytes(b)


def _other_architecture(data: bytes) -> bytes:
    config = json.loads(_header(data)[1]["__metadata__"]["model_config"])
    config["filters"] = [4, 8, 8, 8, 16, 32]
    return _with_metadata(data, model_config=json.dumps(config))


def _huge_input(data: bytes) -> bytes:
    config = json.loads(_header(data)[1]["__metadata__"]["model_config"])
    config["input_size"] = 10 ** 7  # a 10^12-parameter dense layer, if it were built
    return _with_metadata(data, model_config=json.dumps(config))


def _no_checksum(data: bytes) -> bytes:
    _, header = _header(data)
    del header["__metadata__"]["weights_blake2b"]
    return _with_header(data, header)


def _no_metadata(data: bytes) -> bytes:
    _, header = _header(data)
    del header["__metadata__"]
    return _with_header(data, header)


BAD_MODELS = {  # kind -> (bytes from a good file's bytes, words)
    "truncated": (lambda d: d[:len(d) // 2], "not a readable leukolearn model"),
    "cut inside the header length": (lambda d: d[:5], "not a readable leukolearn model"),
    "zero bytes": (lambda d: b"", "not a readable leukolearn model"),
    "header byte changed": (_tampered_header, "not a readable leukolearn model"),
    "tensor data byte changed": (_tampered_data, "damaged: the weights do not match the checksum"),
    "another architecture": (_other_architecture, "do not match the stored architecture"),
    "another format version": (lambda d: _with_metadata(d, leukolearn_format="9"),
                               "model format version 9, this leukolearn reads 1, 2 and 3"),
    "checksum missing": (_no_checksum, "damaged: the checksum of the weights is missing"),
    "no leukolearn metadata": (_no_metadata, "not a leukolearn model"),
    "config not JSON": (lambda d: _with_metadata(d, model_config="{input_size: 190"),
                        "do not match the stored architecture"),
    "config claiming a huge input": (_huge_input, "do not match the stored architecture"),
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_bad_model_file_is_named(kind, model_file, tmp_path):
    change, words = BAD_MODELS[kind]
    path = tmp_path / "model.safetensors"
    path.write_bytes(change(model_file.read_bytes()))
    with pytest.raises(BadFileError) as info:
        load_model(path)
    assert info.value.path == path and words in info.value.problem
    assert "\n" not in str(info.value)


def test_version_1_files_without_a_checksum_still_load(model_file, tmp_path):
    # Weights saved before format 2 (e.g. by a sweep started earlier) have no checksum.
    _, header = _header(model_file.read_bytes())
    del header["__metadata__"]["weights_blake2b"]
    header["__metadata__"]["leukolearn_format"] = "1"
    path = tmp_path / "v1.safetensors"
    path.write_bytes(_with_header(model_file.read_bytes(), header))
    old, new = load_model(path).state_dict(), load_model(model_file).state_dict()
    assert all(old[k].equal(new[k]) for k in new)


def test_bad_model_through_predict_writes_nothing(model_file, base_folder, tmp_path, capsys):
    load_model(model_file)  # the untouched file loads
    for kind in ("truncated", "tensor data byte changed"):
        path = tmp_path / f"{kind}.safetensors"
        path.write_bytes(BAD_MODELS[kind][0](model_file.read_bytes()))
        out = tmp_path / f"pred-{len(kind)}"
        code, _, err = run(["predict", path, base_folder / "blast", "--out", out], capsys)
        one_error_line(code, err, path, BAD_MODELS[kind][1])
        assert not out.exists()


# ---- 52-56: security: no file can run code, no manifest path can leave its folder --------------
FORBIDDEN = re.compile(r"torch\.load\(|pickle\.loads?\(|import pickle|allow_pickle\s*=\s*True|"
                       r"(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.load\(|\bjoblib\b|\bdill\b|marshal\.load")


def test_source_never_unpickles():
    hits = [f"{p.relative_to(SRC)}:{i}: {line.strip()}"
            for p in sorted(SRC.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert hits == []


class _Payload:
    """Unpickling this creates the file `marker`: proof that a file ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))  # the test's own check that it would fire
    assert marker.exists()


def test_pickle_posing_as_a_model_is_never_unpickled(tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    for name, write in {
        "model.safetensors": lambda p: p.write_bytes(pickle.dumps(_Payload(marker))),
        "torch.safetensors": lambda p: torch.save({"state": _Payload(marker)}, p),
        "model.pt": lambda p: torch.save(_Payload(marker), p),
    }.items():
        write(tmp_path / name)
        with pytest.raises(BadFileError, match="not a readable leukolearn model"):
            load_model(tmp_path / name)
        assert not marker.exists(), name


def test_pickled_arrays_in_a_run_or_the_cache_are_never_unpickled(tmp_path):
    from leukolearn.data import cache
    from leukolearn.runstore.store import RunStore

    marker = tmp_path / "code-ran"
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    conn = sqlite3.connect(run_dir / "run.sqlite")
    conn.execute("CREATE TABLE jobs (job_id TEXT, status TEXT, test_idx BLOB, test_labels BLOB, "
                 "test_probs BLOB)")
    conn.execute("INSERT INTO jobs VALUES ('j', 'done', ?, ?, ?)", (buf.getvalue(),) * 3)
    conn.commit()
    conn.close()
    with RunStore.open(run_dir) as store, pytest.raises(LeukolearnError, match="unsafe array"):
        store.predictions("j")
    assert not marker.exists()

    entry = cache.cache_root() / "arrays" / "k"
    entry.mkdir(parents=True)
    (entry / "images.npy").write_bytes(buf.getvalue())
    with pytest.raises(ValueError):
        cache.lookup("k")
    assert not marker.exists()


def test_manifest_paths_cannot_leave_the_folder(tmp_path):
    outside = good_folder(tmp_path / "outside", counts=(("x", 1),)) / "x" / "x0.png"
    root = good_folder(tmp_path / "data", counts=(("blast", 2), ("other", 2)))
    os.symlink(outside, root / "link.png")  # a file link pointing outside
    os.symlink(outside.parent, root / "linked_dir")  # a folder link pointing outside
    os.symlink(root / "blast" / "blast0.png", root / "inside.png")  # a link that stays inside
    rows = "blast/blast1.png,blast\nother/other0.png,other\nother/other1.png,other\n"
    escapes = {"../outside/x/x0.png": "is outside the manifest's folder",
               f"{outside}": "is outside the manifest's folder",
               "link.png": "symbolic link",
               "linked_dir/x0.png": "symbolic link"}
    for k, (rel, words) in enumerate(escapes.items()):
        manifest = root / f"m{k}.csv"
        manifest.write_text(f"path,label\n{rel},blast\n{rows}")
        with pytest.raises(LeukolearnError, match=words) as info:
            load_dataset("manifest", manifest, size=32, progress=False)
        assert str(manifest) in str(info.value) and rel in str(info.value)
        cells = load_dataset("manifest", manifest, size=32, allow_outside_root=True,
                             dedupe=False, progress=False)
        assert len(cells) == 4
    manifest = root / "inside.csv"
    manifest.write_text(f"path,label\ninside.png,blast\n{rows}")
    assert len(load_dataset("manifest", manifest, size=32, dedupe=False, progress=False)) == 4
