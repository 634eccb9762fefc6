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


def test_scale_and_colour_jitter_change_images_only_when_asked_and_keep_the_paper_draws():
    import torch

    from leukolearn.training.augment import apply_colour, colour_draws, random_affine

    paper = random_affine(8, torch.Generator().manual_seed(1))
    robust = random_affine(8, torch.Generator().manual_seed(1), scale_jitter=0.3)
    # The same flips and angles: the zoom only rescales each matrix.
    ratio = robust[:, :, :2] / paper[:, :, :2]
    zoom = 1 / ratio[:, 0, 0]
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), atol=1e-5)
    assert ((zoom >= 1 / 1.3 - 1e-6) & (zoom <= 1.3 + 1e-6)).all() and zoom.std() > 0.02
    x = torch.rand(8, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    draws = colour_draws(8, torch.Generator().manual_seed(3), 0.2)
    y = apply_colour(x, draws)
    assert y.min() >= 0 and y.max() <= 1 and (y - x).abs().mean() > 0.01
    neutral = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 1.0]]).repeat(8, 1)
    torch.testing.assert_close(apply_colour(x, neutral), x)
