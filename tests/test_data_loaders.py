"""Every loader on small files laid out like the real datasets, and every bad input."""
import csv
import json
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import tifffile
from PIL import Image

from leukolearn.data.cellimages import CellImages
from leukolearn.data.dataset import inspect_dataset, list_datasets, load_dataset
from leukolearn.errors import BadFileError, LeukolearnError

SIZE = 48  # small input size keeps the tests fast


def _all_idb2(root: Path, cell_image) -> Path:
    """Four ALL-IDB2 files in four formats, plus files a loader must ignore."""
    root.mkdir()
    Image.fromarray(cell_image(1, 60, 90)).save(root / "Im001_1.jpg", quality=95)  # non-square
    rgba = np.dstack([cell_image(2, 100, 100), np.full((100, 100), 255, np.uint8)])
    tifffile.imwrite(root / "Im002_1.tif", rgba)
    Image.fromarray(cell_image(3)[:, :, 0]).save(root / "Im003_0.png")  # grayscale
    tifffile.imwrite(root / "Im004_0.tif", cell_image(4).astype(np.uint16) * 257)  # 16-bit
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "Thumbs.db").write_bytes(b"\x00\x01")
    (root / "notes.txt").write_text("scanned 2011\n")
    return root


def _masks(folder: Path, ids: list[str], shapes: list[tuple[int, int]]) -> Path:
    folder.mkdir()
    for image_id, (h, w) in zip(ids, shapes):
        rgb = np.full((h, w, 3), 255, np.uint8)
        rgb[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (0, 0, 255)  # cytoplasm
        rgb[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = (0, 255, 255)  # nucleus
        tifffile.imwrite(folder / f"{image_id}.tif", rgb)
    return folder


def _tiff(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]))


def test_list_datasets_names_every_layout():
    names = list_datasets()
    assert set(names) >= {"all-idb2", "aml-lmu", "folder", "manifest"}
    assert all(isinstance(d, str) and d for d in names.values())


def test_all_idb2_layout(tmp_path, cell_image):
    root = _all_idb2(tmp_path / "ALL_IDB2", cell_image)
    cells = load_dataset("all-idb2", root, size=SIZE, progress=False)
    assert isinstance(cells, CellImages)
    assert cells.images.shape == (4, SIZE, SIZE, 3) and cells.images.dtype == np.uint8
    assert cells.class_names == ("healthy", "blast")
    assert cells.image_ids == ("Im001_1", "Im002_1", "Im003_0", "Im004_0")
    np.testing.assert_array_equal(cells.labels, [1, 1, 0, 0])
    assert cells.masks is None and cells.groups is None


def test_default_size_upscales(tmp_path, cell_image):
    root = tmp_path / "ALL"
    root.mkdir()
    Image.fromarray(cell_image(0, 103, 103)).save(root / "Im010_1.jpg")
    assert load_dataset("all-idb2", root, progress=False).size == 257


def test_all_idb2_label_table_csv_and_xlsx(tmp_path, cell_image):
    root = _all_idb2(tmp_path / "img", cell_image)
    rows = [("Image id", "Cell type"), ("Im001_1.jpg", "lymphoblast"), ("Im002_1", "lymphoblast"),
            ("Im003_0", "neutrophil"), ("Im4", "lymphocyte")]
    with open(tmp_path / "types.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(tmp_path / "types.xlsx")
    for table in ("types.csv", "types.xlsx"):
        cells = load_dataset("all-idb2", root, size=SIZE, label_table=tmp_path / table,
                             progress=False)
        assert cells.class_names == ("lymphoblast", "lymphocyte", "neutrophil")
        np.testing.assert_array_equal(cells.labels, [0, 0, 2, 1])


@pytest.mark.parametrize("rows, problem", [
    ([("image", "type"), ("Im001_1", "a"), ("Im002_1", "a"), ("Im003_0", "b"), ("Im004_0", "b"),
      ("Im099_1", "a")], "Im099_1"),
    ([("image", "type"), ("Im001_1", "a"), ("Im002_1", "a")], "Im003_0"),
    ([("name", "type"), ("Im001_1", "a")], "image id"),
])
def test_label_table_mistakes_name_the_table(tmp_path, cell_image, rows, problem):
    root = _all_idb2(tmp_path / "img", cell_image)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(LeukolearnError, match="labels.csv") as err:
        load_dataset("all-idb2", root, size=SIZE, label_table=tmp_path / "labels.csv",
                     progress=False)
    assert problem in str(err.value)


def test_all_idb2_masks(tmp_path, cell_image):
    root = _all_idb2(tmp_path / "img", cell_image)
    # masks at another resolution than the images, same shape (like the 257 px originals)
    masks = _masks(tmp_path / "masks", ["Im001_1", "Im002_1", "Im003_0", "Im004_0"],
                   [(120, 180), (200, 200), (160, 160), (80, 80)])
    cells = load_dataset("all-idb2", root, size=SIZE, masks_dir=masks, progress=False)
    assert cells.masks.shape == (4, SIZE, SIZE) and cells.masks.dtype == np.uint8
    for mask in cells.masks:
        assert set(np.unique(mask)) == {0, 1, 2}
        assert mask[SIZE // 2, SIZE // 2] == 2 and mask[0, SIZE // 2] == 0
    # Networks never read the masks: a run swept without them is the same run when focus
    # or shortcut loads its images with them (same fingerprint, cached or not).
    for cache in (True, False):
        plain = load_dataset("all-idb2", root, size=SIZE, progress=False, cache=cache)
        with_masks = load_dataset("all-idb2", root, size=SIZE, masks_dir=masks, progress=False,
                                  cache=cache)
        assert plain.masks is None and with_masks.fingerprint == plain.fingerprint


def test_missing_or_misshapen_mask_is_a_bad_file(tmp_path, cell_image):
    root = _all_idb2(tmp_path / "img", cell_image)
    masks = _masks(tmp_path / "masks", ["Im001_1", "Im002_1", "Im003_0"],
                   [(60, 60), (100, 100), (80, 80)])  # Im001_1 is 60 x 90: another shape
    report = inspect_dataset("all-idb2", root, size=SIZE, masks_dir=masks, progress=False)
    # the missing one as one summary line on the folder, the misshapen one on its file
    assert sorted(Path(b["path"]).name for b in report["bad_files"]) == ["Im001_1.tif",
                                                                        "masks"]
    with pytest.raises(BadFileError, match="masks: no mask for 1 of 4 images .*Im004_0.tif"):
        load_dataset("all-idb2", root, size=SIZE, masks_dir=masks, progress=False)
    _masks(tmp_path / "more", ["Im004_0"], [(80, 80)])
    (tmp_path / "more" / "Im004_0.tif").rename(masks / "Im004_0.tif")
    with pytest.raises(BadFileError, match="Im001_1.tif: mask is 60x60 but its image is 90x60"):
        load_dataset("all-idb2", root, size=SIZE, masks_dir=masks, progress=False)


def test_aml_lmu_layout(tmp_path, cell_image):
    root = tmp_path / "AML-Cytomorphology_LMU"
    for k, (cls, n) in enumerate([("MYO", 2), ("LYT", 3), ("NGS", 1)]):
        for i in range(n):
            _tiff(root / cls / f"{cls}_{i:04d}.tiff", cell_image(10 * k + i, 120, 120))
    cells = load_dataset("aml-lmu", root, size=SIZE, progress=False)
    assert cells.class_names == ("LYT", "MYO", "NGS")  # present folders only
    assert cells.class_counts() == {"LYT": 3, "MYO": 2, "NGS": 1}
    assert cells.image_ids[0] == "LYT_0000"
    binary = load_dataset("aml-lmu", root, size=SIZE, positive=["MYO", "MOB"], progress=False)
    assert binary.class_names == ("other", "blast")  # MOB absent from this copy: skipped
    assert binary.class_counts() == {"other": 4, "blast": 2}


def test_aml_lmu_default_size_is_400(tmp_path, cell_image):
    _tiff(tmp_path / "aml" / "MON" / "MON_0001.tiff", cell_image(0, 400, 400))
    cells = load_dataset("aml-lmu", tmp_path / "aml", progress=False)
    assert cells.size == 400
    np.testing.assert_array_equal(cells.images[0], cell_image(0, 400, 400))


def test_aml_lmu_unknown_folder_and_absent_positive(tmp_path, cell_image):
    _tiff(tmp_path / "aml" / "LYT" / "LYT_0001.tiff", cell_image(0))
    with pytest.raises(LeukolearnError, match="MYO"):  # no blast class present
        load_dataset("aml-lmu", tmp_path / "aml", size=SIZE, positive=["MYO", "MOB"],
                     progress=False)
    with pytest.raises(LeukolearnError, match="XYZ"):  # a class no layout knows
        load_dataset("aml-lmu", tmp_path / "aml", size=SIZE, positive=["XYZ"], progress=False)
    _tiff(tmp_path / "aml" / "Blasts" / "B_0001.tiff", cell_image(1))
    with pytest.raises(LeukolearnError, match="Blasts"):
        load_dataset("aml-lmu", tmp_path / "aml", size=SIZE, progress=False)


def test_folder_layout_and_binary(tmp_path, cell_image):
    root = tmp_path / "pbc"
    for k, cls in enumerate(["neutrophil", "lymphocyte", "ig"]):
        (root / cls / "sub").mkdir(parents=True)
        Image.fromarray(cell_image(k, 70, 72)).save(root / cls / f"{cls}_1.jpg")
        Image.fromarray(cell_image(k + 10)).save(root / cls / "sub" / f"{cls}_2.png")
    (root / "README.md").write_text("PBC subset\n")
    cells = load_dataset("folder", root, size=SIZE, progress=False)
    assert cells.class_names == ("ig", "lymphocyte", "neutrophil")
    assert cells.class_counts() == {"ig": 2, "lymphocyte": 2, "neutrophil": 2}
    assert "ig/sub/ig_2.png" in cells.image_ids
    binary = load_dataset("folder", root, size=SIZE, positive=["ig"], progress=False)
    assert binary.class_counts() == {"other": 4, "ig": 2}  # named as given, not "blast"


def test_manifest_layout_with_groups(tmp_path, cell_image):
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(cell_image(i)).save(tmp_path / "imgs" / f"c{i}.png")
    with open(tmp_path / "cells.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "group"), ("imgs/c0.png", "blast", "p1"),
                                 ("imgs/c1.png", "normal", "p1"), ("imgs/c2.png", "normal", "p2"),
                                 ("imgs/./c3.png", "blast", "p3")])
    cells = load_dataset("manifest", tmp_path / "cells.csv", size=SIZE, progress=False)
    assert cells.class_names == ("blast", "normal")
    assert cells.image_ids == ("imgs/c0.png", "imgs/c1.png", "imgs/c2.png", "imgs/c3.png")
    assert list(cells.groups) == ["p1", "p1", "p2", "p3"]


def test_manifest_refuses_paths_outside_its_folder(tmp_path, cell_image):
    Image.fromarray(cell_image(0)).save(tmp_path / "outside.png")
    (tmp_path / "m").mkdir()
    for rel in ("../outside.png", str(tmp_path / "outside.png")):
        with open(tmp_path / "m" / "cells.csv", "w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), (rel, "blast")])
        with pytest.raises(LeukolearnError, match="outside"):
            load_dataset("manifest", tmp_path / "m" / "cells.csv", size=SIZE, progress=False)
        cells = load_dataset("manifest", tmp_path / "m" / "cells.csv", size=SIZE,
                             allow_outside_root=True, progress=False)
        assert len(cells) == 1


def test_manifest_missing_file_names_the_row(tmp_path, cell_image):
    Image.fromarray(cell_image(0)).save(tmp_path / "a.png")
    with open(tmp_path / "cells.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), ("a.png", "x"), ("gone.png", "y")])
    with pytest.raises(BadFileError) as err:
        load_dataset("manifest", tmp_path / "cells.csv", size=SIZE, progress=False)
    assert "cells.csv" in str(err.value) and "row 3" in str(err.value)
    assert "gone.png" in str(err.value)


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(LeukolearnError, match="all-idb2.*aml-lmu.*folder.*manifest"):
        load_dataset("all_idb", tmp_path)


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeukolearnError, match="empty"):
        load_dataset("folder", tmp_path / "empty", progress=False)
    (tmp_path / "empty" / ".hidden.jpg").write_bytes(b"x")
    with pytest.raises(LeukolearnError, match="no images found in .*empty"):
        load_dataset("all-idb2", tmp_path / "empty", progress=False)


def test_missing_root_and_inapplicable_option(tmp_path, cell_image):
    with pytest.raises(LeukolearnError, match="nowhere"):
        load_dataset("folder", tmp_path / "nowhere", progress=False)
    root = _all_idb2(tmp_path / "img", cell_image)
    with pytest.raises(LeukolearnError, match="masks_dir"):
        load_dataset("folder", root, masks_dir=tmp_path, progress=False)


@pytest.mark.parametrize("name, content", [
    ("Im005_0.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 20),  # corrupt JPEG
    ("Im005_0.png", b"not a picture at all"),
    ("Im005_0.bmp", b""),
    ("Im005_0.gif", b"GIF89a"),  # a type leukolearn does not read
    ("scan5.jpg", None),  # not named ImNNN_L
])
def test_bad_file_stops_load_and_is_listed_by_inspect(tmp_path, cell_image, name, content):
    root = _all_idb2(tmp_path / "img", cell_image)
    if content is None:
        Image.fromarray(cell_image(9)).save(root / name)
    else:
        (root / name).write_bytes(content)
    with pytest.raises(BadFileError, match=name):
        load_dataset("all-idb2", root, size=SIZE, progress=False)
    report = inspect_dataset("all-idb2", root, size=SIZE, progress=False)
    assert [Path(b["path"]).name for b in report["bad_files"]] == [name]
    assert report["n_images"] == 4


def test_inspect_report(tmp_path, cell_image):
    root = _all_idb2(tmp_path / "img", cell_image)
    Image.fromarray(cell_image(3)[:, :, 0]).save(root / "Im005_0.jpg", quality=70)  # near copy
    report = inspect_dataset("all-idb2", root, size=SIZE, progress=False)
    assert json.loads(json.dumps(report)) == report
    assert report["n_images"] == 5
    assert report["class_counts"] == {"healthy": 3, "blast": 2}
    assert report["image_sizes"] == {"80x80": 3, "90x60": 1, "100x100": 1}
    assert [p[:2] for p in report["duplicate_pairs"]] == [["Im003_0", "Im005_0"]]
    assert report["dropped_duplicates"] == ["Im005_0"] and report["n_after_dedupe"] == 4
    assert report["bad_files"] == []


def test_dedupe_drops_the_second_copy_or_groups_them(tmp_path, cell_image):
    root = _all_idb2(tmp_path / "img", cell_image)
    Image.fromarray(cell_image(1, 60, 90)).save(root / "Im005_1.jpg", quality=60)
    for cache in (True, False):
        cells = load_dataset("all-idb2", root, size=SIZE, cache=cache, progress=False)
        assert cells.image_ids == ("Im001_1", "Im002_1", "Im003_0", "Im004_0")
        assert len(cells.images) == 4
    kept = load_dataset("all-idb2", root, size=SIZE, dedupe=False, progress=False)
    assert len(kept) == 5
    assert kept.groups[0] == kept.groups[4] == "Im001_1"
    assert len(set(kept.groups)) == 4


def test_progress_bar_does_not_break_loading(tmp_path, cell_image):
    root = _all_idb2(tmp_path / "img", cell_image)
    assert len(load_dataset("all-idb2", root, size=SIZE, progress=True)) == 4
