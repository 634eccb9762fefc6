"""Saliency maps: the gradient of the pre-softmax class score, checked by finite differences."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from leukolearn.errors import LeukolearnError
from leukolearn.explain.saliency import eval_mode, saliency
from leukolearn.model.cnn import ModelConfig, build_model


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6), nn.ReLU(), nn.Linear(6, 3),
    ).double()


def test_gradient_matches_finite_differences():
    net = _net()
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    got = saliency(net, x, target=[2, 0], raw=True)
    assert got.raw.shape == (2, 3, 10, 10) and got.maps.shape == (2, 10, 10)
    np.testing.assert_array_equal(got.target, [2, 0])
    rng, h = np.random.default_rng(0), 1e-6
    for n, t in enumerate(got.target):
        for _ in range(20):
            c, i, j = rng.integers(0, 3), rng.integers(0, 10), rng.integers(0, 10)
            up, down = x[n:n + 1].clone(), x[n:n + 1].clone()
            up[0, c, i, j] += h
            down[0, c, i, j] -= h
            with torch.no_grad():
                fd = (net(up)[0, t] - net(down)[0, t]).item() / (2 * h)
            assert got.raw[n, c, i, j] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    np.testing.assert_allclose(got.maps, np.abs(got.raw).max(axis=1))


def test_default_target_is_the_prediction_and_batches_line_up():
    net = _net()
    x = torch.rand(5, 3, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        scores = net(x)
    default = saliency(net, x, batch_size=2)
    np.testing.assert_array_equal(default.target, scores.argmax(1).numpy())
    np.testing.assert_allclose(default.score, scores.max(1).values.numpy())
    per_image = saliency(net, x, target=np.array([0, 1, 2, 1, 0]), batch_size=2)
    np.testing.assert_array_equal(per_image.target, [0, 1, 2, 1, 0])
    one = saliency(net, x[3:4], target=1)
    np.testing.assert_allclose(per_image.maps[3], one.maps[0])
    assert default.raw is None


def test_paper_cnn_on_uint8_images_leaves_the_model_alone():
    model = build_model(ModelConfig(input_size=190), seed=1)
    model.train()
    model.hidden.register_forward_hook(lambda *args: None)  # a user's hook stays
    images = np.random.default_rng(0).integers(0, 256, (2, 190, 190, 3), dtype=np.uint8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    keys = [sorted(m.__dict__) for m in model.modules()]
    got = saliency(model, images)
    assert got.maps.shape == (2, 190, 190) and got.maps.dtype == np.float32
    assert (got.maps >= 0).all() and got.maps.max() > 0
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [sorted(m.__dict__) for m in model.modules()] == keys
    assert len(model.hidden._forward_hooks) == 1
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()) == 1


def test_eval_mode_restores_mixed_flags_even_on_error():
    net = _net()
    net[1].train(False)
    flags = [m.training for m in net.modules()]
    with pytest.raises(RuntimeError):
        with eval_mode(net):
            assert not any(m.training for m in net.modules())
            raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == flags


def test_bad_inputs_are_user_errors():
    net = _net()
    with pytest.raises(LeukolearnError, match="uint8"):
        saliency(net, np.zeros((1, 10, 10, 3), dtype=np.float32))
    with pytest.raises(LeukolearnError, match="out of range"):
        saliency(net, torch.rand(1, 3, 10, 10, dtype=torch.float64), target=3)
