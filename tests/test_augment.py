import numpy as np
import torch

from leukolearn.training.augment import augment_batch, oversample_indices


def test_augmentation_keeps_shape_and_value_range_and_is_seeded():
    x = torch.rand(6, 3, 40, 40)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    c = augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_rotation_fills_with_the_nearest_edge_not_black():
    # A uniform image stays uniform under any rotation with nearest-edge fill
    # (zero fill would bring in black corners).
    x = torch.full((8, 3, 33, 33), 0.7)
    out = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.allclose(out, x, atol=1e-5)


def test_augmentation_preserves_a_centred_disc_mass():
    # Flips and rotations about the centre move pixels, not the amount of signal.
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    disc = (((yy - 20) ** 2 + (xx - 25) ** 2) < 36).float()
    x = disc.expand(16, 3, 41, 41).clone()
    out = augment_batch(x, torch.Generator().manual_seed(5))
    ratio = out.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert torch.all((ratio > 0.9) & (ratio < 1.1))
    assert not torch.allclose(out, x)  # something moved


def test_oversampling_tops_up_small_classes_only():
    labels = np.array([0] * 100 + [1] * 10 + [2] * 3)
    idx = oversample_indices(labels, 50, np.random.default_rng(0))
    counts = np.bincount(labels[idx])
    assert counts.tolist() == [100, 50, 50]
    # every original image is kept
    assert set(np.flatnonzero(labels == 2)) <= set(idx.tolist())
