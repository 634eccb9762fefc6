"""Suspicious images warn (one line per kind), one cell under two labels is an error,
`inspect` exits non-zero on what it lists, a wrong --masks folder is one line, and a
manifest may reach outside its folder from the CLI when asked.

| input                                          | outcome                                      |
|------------------------------------------------|----------------------------------------------|
| a normal folder                                | no warning, inspect exit 0                   |
| 1x1 px image(s)                                | one warning "N images are smaller than ..."  |
| 500x10 px image                                | one warning "more elongated than 3:1"        |
| 2-page TIFF                                    | one warning "only the first, page 0"         |
| one file in two class folders                  | BadFileError naming both; inspect lists, 1   |
| same pixels as PNG and BMP, two labels         | BadFileError "identical pixels"              |
| same file twice under one label                | dropped as a duplicate, no word (as before)  |
| flat images of two colours, two labels         | loads; warning: near-duplicates, labels      |
| ALL-IDB2 Im001_0 beside Im001_1                | BadFileError naming both; inspect lists      |
| --masks folder missing most masks              | one line "no mask for K of N images"         |
| manifest with an absolute path, CLI            | exit 2 naming --allow-outside-root; loads    |
|                                                | with --allow-outside-root                    |
"""
import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers import run_cli
from leukolearn.data.checks import DataWarning, tiny_threshold
from leukolearn.data.dataset import inspect_dataset, load_dataset
from leukolearn.data.decode import count_pages, read_image
from leukolearn.errors import BadFileError, LeukolearnError

SIZE = 48  # the model input of these tests: tiny means under 6 px


def _folder(root: Path, cell_image, per_class: int = 3) -> Path:
    """Two classes of distinct 40 px cells: nothing to warn about."""
    for k, cls in enumerate(("blast", "other")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(cell_image(10 * k + i, 40, 40)).save(root / cls / f"c{i}.png")
    return root


def _load(*args, **kwargs):
    """load_dataset, and the DataWarning messages it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cells = load_dataset(*args, progress=False, **kwargs)
    return cells, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_normal_folder_gives_no_warning(tmp_path, cell_image, capsys):
    root = _folder(tmp_path / "d", cell_image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the load
        assert len(load_dataset("folder", root, size=SIZE, progress=False)) == 6
    report = inspect_dataset("folder", root, size=SIZE, progress=False)
    assert report["warnings"] == [] and report["label_conflicts"] == []
    code, out, err = run_cli(["inspect", "folder", root, "--strict", "--json"], capsys)
    assert code == 0 and "warning" not in err, err


def test_tiny_threshold_is_an_eighth_of_the_input():
    # 257 -> 32 px, 400 -> 50 px: beyond 8x upscaling the input is mostly interpolation
    assert [tiny_threshold(s) for s in (257, 400, 48, 4)] == [32, 50, 6, 1]


def test_tiny_images_are_one_warning_with_a_count(tmp_path, cell_image, capsys):
    root = _folder(tmp_path / "d", cell_image)
    for i in range(5):
        Image.fromarray(cell_image(50 + i, 1, 1)).save(root / "blast" / f"tiny{i}.png")
    Image.fromarray(cell_image(60, 6, 6)).save(root / "blast" / "edge.png")  # 6 px: not tiny
    # dedupe off: 1x1 px images are flat, so near-duplicates of one another
    cells, messages = _load("folder", root, size=SIZE, dedupe=False)
    assert len(cells) == 12  # they load: a warning, not an error
    assert messages == [
        "5 images are smaller than 6 px, so upscaled more than 8x to the 48 px input: the "
        "network sees mostly interpolation (blast/tiny0.png (1x1), blast/tiny1.png (1x1), "
        "blast/tiny2.png (1x1) and 2 more)"]
    report = inspect_dataset("folder", root, size=SIZE, dedupe=False, progress=False)
    assert report["warnings"] == messages  # the same line, in the report
    cli = ["inspect", "folder", root, "--keep-duplicates", "--size", SIZE]
    code, out, _ = run_cli([*cli, "--json"], capsys)
    assert code == 0 and json.loads(out)["warnings"] == messages  # warnings alone: exit 0
    code, _, _ = run_cli([*cli, "--strict"], capsys)
    assert code == 1


def test_elongated_image_warns(tmp_path, cell_image):
    root = _folder(tmp_path / "d", cell_image)
    Image.fromarray(cell_image(70, 10, 500)).save(root / "other" / "strip.png")
    Image.fromarray(cell_image(71, 10, 30)).save(root / "other" / "three.png")  # 3:1 exactly
    _, messages = _load("folder", root, size=SIZE)
    assert len(messages) == 1
    assert messages[0].startswith("1 image is more elongated than 3:1")
    assert messages[0].endswith("(other/strip.png (500x10))")


def test_multipage_tiff_warns_that_page_0_is_used(tmp_path, cell_image):
    root = _folder(tmp_path / "d", cell_image)
    pages = [cell_image(80, 40, 40), cell_image(81, 40, 40)]
    tifffile.imwrite(root / "blast" / "stack.tif", np.stack(pages))
    assert count_pages(root / "blast" / "stack.tif") == 2
    np.testing.assert_array_equal(read_image(root / "blast" / "stack.tif"), pages[0])
    assert count_pages(root / "blast" / "c0.png") == 1
    expected = ["1 image has several pages or frames (multi-page TIFF, animated PNG); only "
                "the first, page 0, is used (blast/stack.tif (2 pages))"]
    for _ in range(2):  # decoded, then from the cache: the warning stays
        cells, messages = _load("folder", root, size=SIZE)
        assert messages == expected
    # A cache entry from before page counts were stored gets them from the files' headers
    (entry,) = (tmp_path / "leukolearn-cache" / "arrays").iterdir()
    (entry / "pages.npy").unlink()
    again, messages = _load("folder", root, size=SIZE)
    assert messages == expected and (entry / "pages.npy").is_file()
    assert again.fingerprint == cells.fingerprint


def test_same_file_under_two_labels_is_an_error(tmp_path, cell_image, capsys):
    root = _folder(tmp_path / "d", cell_image)
    shutil.copy(root / "blast" / "c0.png", root / "other" / "copy.png")
    for dedupe in (True, False):  # never dropped silently, nor kept in one group
        with pytest.raises(BadFileError) as err:
            load_dataset("folder", root, size=SIZE, dedupe=dedupe, progress=False)
        assert err.value.path == root / "other" / "copy.png"
        assert f"same cell as {root / 'blast' / 'c0.png'} (identical files)" in err.value.problem
        assert "'other' here and 'blast' there" in err.value.problem
    report = inspect_dataset("folder", root, size=SIZE, progress=False)
    assert report["label_conflicts"] == [{
        "paths": [str(root / "blast" / "c0.png"), str(root / "other" / "copy.png")],
        "labels": ["blast", "other"], "problem": err.value.problem}]
    code, out, _ = run_cli(["inspect", "folder", root, "--json"], capsys)
    assert code == 1 and len(json.loads(out)["label_conflicts"]) == 1
    code, out, _ = run_cli(["inspect", "folder", root], capsys)
    assert code == 1 and "1 label conflict(s)" in out


def test_same_pixels_in_another_format_is_an_error(tmp_path, cell_image):
    root = _folder(tmp_path / "d", cell_image)
    Image.fromarray(cell_image(0, 40, 40)).save(root / "other" / "again.bmp")  # = blast/c0
    with pytest.raises(BadFileError, match="identical pixels"):
        load_dataset("folder", root, size=SIZE, progress=False)


def test_two_conflicts_are_one_error_with_a_count(tmp_path, cell_image):
    root = _folder(tmp_path / "d", cell_image)
    shutil.copy(root / "blast" / "c0.png", root / "other" / "copy0.png")
    shutil.copy(root / "blast" / "c1.png", root / "other" / "copy1.png")
    with pytest.raises(BadFileError, match=r"and 1 more label conflict \(`leukolearn inspect`"):
        load_dataset("folder", root, size=SIZE, progress=False)
    assert len(inspect_dataset("folder", root, size=SIZE,
                               progress=False)["label_conflicts"]) == 2


def test_same_label_copy_is_still_dropped_without_a_word(tmp_path, cell_image):
    root = _folder(tmp_path / "d", cell_image)
    shutil.copy(root / "blast" / "c0.png", root / "blast" / "copy.png")
    cells, messages = _load("folder", root, size=SIZE)
    assert messages == [] and len(cells) == 6 and "blast/copy.png" not in cells.image_ids


def test_flat_images_of_two_colours_are_not_a_conflict(tmp_path, cell_image):
    # Flat images hash alike whatever their colour: hash distance 0 alone is no proof.
    root = _folder(tmp_path / "d", cell_image)
    Image.fromarray(np.full((40, 40, 3), (200, 30, 30), np.uint8)).save(root / "blast" / "r.png")
    Image.fromarray(np.full((40, 40, 3), (30, 30, 200), np.uint8)).save(root / "other" / "b.png")
    cells, messages = _load("folder", root, size=SIZE)
    assert "other/b.png" not in cells.image_ids  # dropped as a near-duplicate, as before
    assert messages == ["1 near-duplicate pair has different labels; deduplication keeps the "
                        "first of each, with its label (blast/r.png (blast) ~ other/b.png "
                        "(other))"]
    assert inspect_dataset("folder", root, size=SIZE, progress=False)["label_conflicts"] == []


def test_all_idb2_number_under_both_labels_is_an_error(tmp_path, cell_image, capsys):
    root = tmp_path / "idb"
    root.mkdir()
    for i, name in enumerate(["Im001_0", "Im001_1", "Im002_1", "Im003_0"]):
        Image.fromarray(cell_image(i, 40, 40)).save(root / f"{name}.png")  # all distinct
    with pytest.raises(BadFileError) as err:
        load_dataset("all-idb2", root, size=SIZE, progress=False)
    assert err.value.path == root / "Im001_1.png"
    assert f"same cell as {root / 'Im001_0.png'} (same ALL-IDB2 image number 001)" \
        in err.value.problem
    report = inspect_dataset("all-idb2", root, size=SIZE, progress=False)
    assert [c["labels"] for c in report["label_conflicts"]] == [["healthy", "blast"]]
    code, _, _ = run_cli(["inspect", "all-idb2", root], capsys)
    assert code == 1
    # With a label table (keyed by number) the conflict is still what inspect lists
    with open(tmp_path / "types.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image id", "cell type"), ("Im001", "lymphoblast"),
                                 ("Im002", "lymphoblast"), ("Im003", "neutrophil")])
    report = inspect_dataset("all-idb2", root, size=SIZE, label_table=tmp_path / "types.csv",
                             progress=False)
    assert len(report["label_conflicts"]) == 1 and report["n_images"] == 4


def test_wrong_masks_folder_is_one_line(tmp_path, cell_image, capsys):
    root = tmp_path / "idb"
    root.mkdir()
    for i in range(1, 8):
        Image.fromarray(cell_image(i, 40, 40)).save(root / f"Im{i:03d}_{i % 2}.png")
    wrong = tmp_path / "not-masks"
    wrong.mkdir()
    Image.fromarray(cell_image(0, 40, 40)).save(wrong / "Im002_0.png")  # one does match
    problem = (f"no mask for 6 of 7 images in this folder (first missing: Im001_1.tif, "
               "Im003_1.tif, Im004_0.tif, ...); a mask is named like its image, ending "
               ".tif, .tiff or .png")
    report = inspect_dataset("all-idb2", root, size=SIZE, masks_dir=wrong, progress=False)
    assert report["bad_files"] == [{"path": str(wrong), "problem": problem}]
    with pytest.raises(BadFileError, match="no mask for 6 of 7"):
        load_dataset("all-idb2", root, size=SIZE, masks_dir=wrong, progress=False)
    code, out, _ = run_cli(["inspect", "all-idb2", root, "--masks", wrong], capsys)
    assert code == 1 and " ".join(out.split()).count("no mask for") == 1  # rich wraps


def test_inspect_exits_1_on_a_bad_file(tmp_path, cell_image, capsys):
    root = _folder(tmp_path / "d", cell_image)
    (root / "other" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    code, out, err = run_cli(["inspect", "folder", root, "--json"], capsys)
    assert code == 1 and len(json.loads(out)["bad_files"]) == 1 and "error" not in err
    code, _, err = run_cli(["inspect", "no-such-layout", root], capsys)
    assert code == 2 and err.startswith("error:")  # cannot inspect at all: 2, as before
    code, out, _ = run_cli(["inspect", "--help"], capsys)
    assert code == 0 and "Exit status" in out


def test_manifest_outside_its_folder_from_the_cli(tmp_path, cell_image, capsys):
    images = _folder(tmp_path / "elsewhere", cell_image)
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "cells.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label")] + [
            (str(images / cls / f"c{i}.png"), cls) for cls in ("blast", "other")
            for i in range(3)])
    code, _, err = run_cli(["inspect", "manifest", manifest], capsys)
    assert code == 2 and "--allow-outside-root" in err and "Traceback" not in err
    code, out, err = run_cli(["inspect", "manifest", manifest, "--allow-outside-root",
                              "--json"], capsys)
    assert code == 0 and json.loads(out)["n_images"] == 6, err
    with pytest.raises(LeukolearnError, match="--allow-outside-root"):
        load_dataset("manifest", manifest, size=SIZE, progress=False)
    cells = load_dataset("manifest", manifest, size=SIZE, allow_outside_root=True,
                         progress=False)
    assert cells.source.load_options["allow_outside_root"] is True  # reloadable as loaded


def test_cli_prints_each_warning_as_one_line(tmp_path, cell_image, capsys):
    root = _folder(tmp_path / "d", cell_image, per_class=1)  # too few images: train stops
    for i in range(3):
        Image.fromarray(cell_image(90 + i, 1, 1)).save(root / "blast" / f"tiny{i}.png")
    code, _, err = run_cli(["train", "folder", root, "--positive", "blast", "--size", SIZE,
                            "--out", tmp_path / "o"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error:"), err
    assert [line for line in lines if line.startswith("warning:")] == [
        "warning: 3 images are smaller than 6 px, so upscaled more than 8x to the 48 px "
        "input: the network sees mostly interpolation (blast/tiny0.png (1x1), "
        "blast/tiny1.png (1x1), blast/tiny2.png (1x1))"]
