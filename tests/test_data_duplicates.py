"""Near-duplicate finding: copies found, distinct images not, groups by union-find."""
import io
import itertools

import numpy as np
from PIL import Image

from leukolearn.data import duplicates
from leukolearn.data.duplicates import (HASH_BITS, duplicate_groups, duplicates_to_drop,
                                        find_duplicate_pairs, perceptual_hash)


def _jpeg_copy(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_hash_shape():
    h = perceptual_hash(np.zeros((50, 70, 3), np.uint8))
    assert h.shape == (HASH_BITS,) and h.dtype == bool


def test_noisy_and_recompressed_copies_found_distinct_images_not(cell_image):
    originals = [cell_image(seed) for seed in range(30)]
    noise = np.random.default_rng(0).normal(0, 8, originals[0].shape)
    noisy = np.clip(originals[3] + noise, 0, 255).astype(np.uint8)
    recompressed = _jpeg_copy(originals[7], quality=60)
    images = originals + [noisy, recompressed]
    pairs = find_duplicate_pairs(np.array([perceptual_hash(im) for im in images]))
    assert [(i, j) for i, j, _ in pairs] == [(3, 30), (7, 31)]


def test_blockwise_distances_match_brute_force(monkeypatch):
    rng = np.random.default_rng(1)
    base = rng.random((12, HASH_BITS)) < 0.5
    flips = rng.random((12, HASH_BITS)) < 0.1  # ~27 bits off each: near copies of `base`
    hashes = np.concatenate([base, base ^ flips])
    monkeypatch.setattr(duplicates, "_BLOCK", 5)  # several blocks, uneven last one
    expected = sorted((i, j, int((hashes[i] != hashes[j]).sum()))
                      for i, j in itertools.combinations(range(len(hashes)), 2)
                      if (hashes[i] != hashes[j]).sum() <= 40)
    assert find_duplicate_pairs(hashes, max_distance=40) == expected
    assert len(expected) >= 12


def test_invalid_rows_take_part_in_no_pair():
    hashes = np.zeros((3, HASH_BITS), bool)
    assert find_duplicate_pairs(hashes, valid=np.array([True, False, True])) == [(0, 2, 0)]


def test_groups_chain_through_a_third_image():
    pairs = [(1, 4, 10), (4, 6, 12), (2, 3, 0)]
    np.testing.assert_array_equal(duplicate_groups(7, pairs), [0, 1, 2, 2, 1, 5, 1])
    np.testing.assert_array_equal(duplicates_to_drop(7, pairs), [3, 4, 6])


def test_no_pairs_drops_nothing():
    assert len(duplicates_to_drop(5, [])) == 0
