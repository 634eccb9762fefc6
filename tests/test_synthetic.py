"""The synthetic cell generator: bookkeeping, determinism, looks, and where the signal lives."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS
from leukolearn.data.synthetic import (CELL_TYPES, make_binary, make_cells,
                                       write_image_folder)
from leukolearn.errors import LeukolearnError

SMALL = 96  # image size for tests that only need the geometry; the look scales with size


# ----------------------------------------------------------------- hand features, no network


def pixel_planes(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 8) per-pixel values to average: r, g, b, their squares, and whether the
    pixel is nucleus-coloured (purple) or red-cell-coloured."""
    x = images.astype(np.float32) / 255
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    purple = ((b - g) > 45 / 255) & (r < 190 / 255)
    reddish = (r - g) > 35 / 255
    return np.concatenate([x, x * x, purple[..., None], reddish[..., None]], -1)


def region_features(planes: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(N, 8): colour mean and std in `region` (N, H, W) bool, and the share of purple and
    reddish pixels in it. Shares, not counts: a count of background pixels would measure
    the cell."""
    w = region.astype(np.float32)
    means = np.einsum("nhwk,nhw->nk", planes, w) / (w.sum((1, 2))[:, None] + 1e-6)
    std = np.sqrt(np.maximum(means[:, 3:6] - means[:, :3] ** 2, 0))
    return np.c_[means[:, :3], std, means[:, 6:]]


def held_out_accuracy(train, test, region) -> float:
    (train, train_planes), (test, test_planes) = train, test
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(region_features(train_planes, region(train.masks)), train.labels)
    return clf.score(region_features(test_planes, region(test.masks)), test.labels)


def whole_image(masks):
    return np.ones(masks.shape, bool)


def cell_region(masks):
    return masks > MASK_BACKGROUND


def background_region(masks):
    return masks == MASK_BACKGROUND


@pytest.fixture(scope="module")
def binary_sets():
    """(train, test) pairs of blast-vs-other sets, each with its pixel planes, per signal."""
    def made(seed, signal):
        cells = make_binary(48, size=128, seed=seed, signal=signal)
        return cells, pixel_planes(cells.images)

    return {signal: (made(11, signal), made(12, signal))
            for signal in ("cell", "background", "both")}


# ----------------------------------------------------------------- bookkeeping


def test_shapes_dtypes_ids_and_masks_agree():
    cells = make_cells(3, size=SMALL, seed=1)
    n = 3 * len(CELL_TYPES)
    assert cells.images.shape == (n, SMALL, SMALL, 3) and cells.images.dtype == np.uint8
    assert cells.masks.shape == (n, SMALL, SMALL) and cells.masks.dtype == np.uint8
    assert cells.class_names == CELL_TYPES
    assert cells.class_counts() == {name: 3 for name in CELL_TYPES}
    assert set(np.unique(cells.masks)) == {MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS}
    for image_id, label in zip(cells.image_ids, cells.labels):
        name, index = image_id.rsplit("_", 1)
        assert name == f"syn_{CELL_TYPES[label]}" and len(index) == 4
    for mask in cells.masks:  # one cell near the centre, with both a nucleus and cytoplasm
        assert (mask == MASK_NUCLEUS).sum() > 0.01 * mask.size
        assert (mask == MASK_CYTOPLASM).sum() > 0.01 * mask.size
        labelled, n_parts = ndimage.label(mask > 0)
        assert n_parts == 1
        cy, cx = ndimage.center_of_mass(mask > 0)
        assert abs(cy - SMALL / 2) < 0.15 * SMALL and abs(cx - SMALL / 2) < 0.15 * SMALL


def test_binary_names_counts_and_ids():
    cells = make_binary({"other": 7, "blast": 3}, size=SMALL)
    assert cells.class_names == ("other", "blast")
    assert cells.class_counts() == {"other": 7, "blast": 3}
    assert cells.image_ids[:2] == ("syn_other_0000", "syn_blast_0000")
    # the "other" images cycle through the five other types: nucleus sizes differ a lot
    other_nuclei = (cells.masks[cells.labels == 0] == MASK_NUCLEUS).sum((1, 2))
    assert other_nuclei.max() > 1.5 * other_nuclei.min()


def test_dict_counts_pick_the_classes():
    cells = make_cells({"blast": 2, "monocyte": 1}, size=SMALL)
    assert cells.class_names == ("blast", "monocyte")
    assert cells.image_ids == ("syn_blast_0000", "syn_monocyte_0000", "syn_blast_0001")


@pytest.mark.parametrize("kwargs", [
    {"n_per_class": 2, "classes": ("blast", "plasma cell")},
    {"n_per_class": 2, "signal": "nucleus"},
    {"n_per_class": -1},
    {"n_per_class": {"blast": 2, "myelocyte": 1}, "classes": ("blast",)},
    {"n_per_class": 2, "size": 8},
])
def test_bad_arguments_are_user_errors(kwargs):
    with pytest.raises(LeukolearnError):
        make_cells(**kwargs)


# ----------------------------------------------------------------- determinism


def test_same_seed_same_arrays_other_seed_other_arrays():
    a = make_cells(2, size=SMALL, seed=5)
    b = make_cells(2, size=SMALL, seed=5)
    c = make_cells(2, size=SMALL, seed=6)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert a.fingerprint == b.fingerprint
    assert not np.array_equal(a.images, c.images)
    assert a.image_ids == c.image_ids  # ids name the position, not the content
    # every image differs from every other (no repeated draws)
    flat = a.images.reshape(len(a), -1)
    assert len({row.tobytes() for row in flat}) == len(a)


def test_more_images_start_with_the_same_images():
    small = make_cells(2, size=SMALL, seed=3)
    large = make_cells(5, size=SMALL, seed=3)
    assert large.image_ids[:len(small)] == small.image_ids
    assert np.array_equal(large.images[:len(small)], small.images)
    # with other counts per class, an image id still names the same image
    few = make_cells({"blast": 1, "monocyte": 3}, size=SMALL, seed=3)
    many = make_cells({"blast": 4, "monocyte": 2}, size=SMALL, seed=3)
    same = [many.image_ids.index(i) for i in few.image_ids if i in many.image_ids]
    assert len(same) == 3
    assert np.array_equal(many.images[same], few.images[[few.image_ids.index(many.image_ids[k])
                                                          for k in same]])


# ----------------------------------------------------------------- looks


def test_blasts_have_the_largest_nucleus_and_a_larger_share_than_lymphocytes():
    cells = make_cells(12, size=SMALL, seed=2)
    nucleus = (cells.masks == MASK_NUCLEUS).sum((1, 2))
    share = nucleus / (cells.masks > 0).sum((1, 2))
    by_type = {name: k for k, name in enumerate(cells.class_names)}
    blast = cells.labels == by_type["blast"]
    for name, k in by_type.items():
        if name != "blast":
            assert np.median(nucleus[blast]) > 2 * np.median(nucleus[cells.labels == k]), name
    lymph = cells.labels == by_type["lymphocyte"]
    assert np.median(share[blast]) > np.median(share[lymph]) + 0.08
    assert np.median(share[blast]) > 0.6


def test_nucleus_is_darker_and_bluer_than_the_background():
    cells = make_cells(4, size=SMALL, seed=4)
    blue_share = lambda px: (px[:, 2] / px.sum(1)).mean()  # noqa: E731
    for image, mask in zip(cells.images.astype(float), cells.masks):
        nucleus, background = image[mask == MASK_NUCLEUS], image[mask == MASK_BACKGROUND]
        assert nucleus.sum(1).mean() < background.sum(1).mean() - 120
        assert blue_share(nucleus) > blue_share(background) + 0.05


def test_jitter_zero_centres_every_cell_and_fixes_its_size():
    steady = make_cells({"lymphocyte": 6}, size=SMALL, seed=1, jitter=0.0)
    shaky = make_cells({"lymphocyte": 6}, size=SMALL, seed=1, jitter=1.0)
    for mask in steady.masks:
        cy, cx = ndimage.center_of_mass(mask > 0)
        assert abs(cy - SMALL / 2) < 2 and abs(cx - SMALL / 2) < 2
    area = lambda c: (c.masks > 0).sum((1, 2))  # noqa: E731
    assert area(steady).std() < 0.5 * area(shaky).std()


# ----------------------------------------------------------------- where the signal lives


@pytest.mark.slow
def test_simple_classifier_finds_blasts_when_the_cell_carries_the_class(binary_sets):
    train, test = binary_sets["cell"]
    assert held_out_accuracy(train, test, whole_image) > 0.9


def test_cell_signal_leaves_the_background_uninformative(binary_sets):
    train, test = binary_sets["cell"]
    assert held_out_accuracy(train, test, cell_region) > 0.9
    assert held_out_accuracy(train, test, background_region) < 0.7


def test_background_signal_leaves_the_cell_uninformative(binary_sets):
    train, test = binary_sets["background"]
    assert held_out_accuracy(train, test, cell_region) < 0.7
    assert held_out_accuracy(train, test, background_region) > 0.9


@pytest.mark.slow
def test_both_signals_inform_both_regions(binary_sets):
    train, test = binary_sets["both"]
    assert held_out_accuracy(train, test, cell_region) > 0.9
    assert held_out_accuracy(train, test, background_region) > 0.9


# ----------------------------------------------------------------- image folders


def test_write_image_folder_round_trips_png(tmp_path):
    cells = make_binary(2, size=64, seed=8)
    paths = write_image_folder(cells, tmp_path / "smear")
    assert len(paths) == len(cells)
    assert sorted(p.name for p in (tmp_path / "smear").iterdir()) == ["blast", "other"]
    for path, image, label, image_id in zip(paths, cells.images, cells.labels, cells.image_ids):
        assert path == tmp_path / "smear" / cells.class_names[label] / f"{image_id}.png"
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)
