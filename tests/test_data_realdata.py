"""The loaders on the real images in ../shared/data (skipped when it is absent)."""
import warnings

import numpy as np
import pytest

from leukolearn.data.dataset import inspect_dataset, load_dataset

pytestmark = pytest.mark.realdata

# Near-identical pairs in the 103 px ALL-IDB2 copy (see shared/data/README.md).
CLEAR_PAIRS = [("Im001_1", "Im067_1"), ("Im223_0", "Im257_0"), ("Im227_0", "Im260_0"),
               ("Im225_0", "Im259_0"), ("Im222_0", "Im256_0"), ("Im224_0", "Im258_0")]


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _shared_cache(module_cache, monkeypatch):
    """One cache for the module, so each real dataset is decoded once."""
    monkeypatch.setenv("LEUKOLEARN_CACHE", str(module_cache))


def test_all_idb2_inspect_finds_the_duplicates(shared_data):
    report = inspect_dataset("all-idb2", shared_data / "all-idb2-103px", progress=False)
    assert report["n_images"] == 260 and report["bad_files"] == []
    assert report["class_counts"] == {"healthy": 130, "blast": 130}
    assert report["image_sizes"]["103x103"] == 251 and sum(report["image_sizes"].values()) == 260
    found = {(a, b) for a, b, _ in report["duplicate_pairs"]}
    assert set(CLEAR_PAIRS) <= found
    # 14 pairs at the tuned threshold (duplicates.py): 12 groups, 13 images dropped.
    assert len(found) == 14 and report["n_after_dedupe"] == 247
    # Both distance-0 pairs (1/67, 223/257) share a label: duplicates, not label conflicts;
    # 103 px (2.5x to 257) is not tiny and 78x103 is the most elongated: no warning.
    assert report["label_conflicts"] == [] and report["warnings"] == []
    assert {(a, b) for a, b, d in report["duplicate_pairs"] if d == 0} == {
        ("Im001_1", "Im067_1"), ("Im223_0", "Im257_0")}


def test_all_idb2_load_drops_duplicates(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real data loads without a word
        cells = load_dataset("all-idb2", shared_data / "all-idb2-103px", progress=False)
    assert cells.images.shape == (247, 257, 257, 3)
    assert not {b for _, b in CLEAR_PAIRS} & set(cells.image_ids)
    assert {a for a, _ in CLEAR_PAIRS} <= set(cells.image_ids)


def test_all_idb2_masks(shared_data):
    report = inspect_dataset("all-idb2", shared_data / "all-idb2-103px",
                             masks_dir=shared_data / "all-idb2-masks", progress=False)
    assert report["bad_files"] == [] and report["warnings"] == []  # every mask found
    cells = load_dataset("all-idb2", shared_data / "all-idb2-103px",
                         masks_dir=shared_data / "all-idb2-masks", dedupe=False, progress=False)
    assert cells.masks.shape == (260, 257, 257)
    assert set(np.unique(cells.masks)) == {0, 1, 2}
    # each mask marks a nucleus near the middle of its image
    assert (cells.masks[:, 96:160, 96:160] == 2).any(axis=(1, 2)).mean() > 0.95


def test_aml_lmu_sample(shared_data):
    report = inspect_dataset("aml-lmu", shared_data / "aml-cytomorphology-lmu-sample",
                             positive=["MYO", "MOB"], progress=False)
    assert report["n_images"] == 45 and len(report["class_counts"]) == 11
    assert report["class_counts"]["MYO"] == 5
    assert report["binary_counts"] == {"other": 40, "blast": 5}
    assert report["image_sizes"] == {"400x400": 45}
    # single-page RGBA TIFFs: no multi-page warning, and no label conflict
    assert report["warnings"] == [] and report["label_conflicts"] == []


def test_pbc_subset(shared_data):
    report = inspect_dataset("folder", shared_data / "pbc-subset", progress=False)
    assert report["n_images"] == 2400 and report["bad_files"] == []
    assert len(report["class_counts"]) == 8
    assert set(report["class_counts"].values()) == {300}
    assert report["warnings"] == [] and report["label_conflicts"] == []
