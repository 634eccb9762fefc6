"""LRP rules against a slow reference written with explicit loops over units."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from leukolearn.errors import LeukolearnError
from leukolearn.explain.lrp import (FIRST_RULES, RULES, AlphaBeta, Epsilon, Flat, ZBox, ZPlus, get_rule, lrp)
from leukolearn.model.cnn import ModelConfig, build_model, min_input_size

RTOL, ATOL = 1e-6, 1e-9  # float64 throughout; the only difference is the 1e-9 stabiliser


# --------------------------------------------------------------------------- reference


def _connections(layer: nn.Module, x: np.ndarray):
    """Every output unit j of a Linear / Conv2d (stride 1, no padding) as
    (j, bias_j, [(i, w_ij), ...]) with i, j flat indices into x and the output."""
    w = layer.weight.detach().numpy()
    b = layer.bias.detach().numpy()
    units = []
    if isinstance(layer, nn.Linear):
        for j in range(w.shape[0]):
            units.append((j, b[j], [(i, w[j, i]) for i in range(w.shape[1])]))
        return units, (w.shape[0],)
    c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    for co in range(c_out):
        for oy in range(oh):
            for ox in range(ow):
                j = np.ravel_multi_index((co, oy, ox), (c_out, oh, ow))
                conns = []
                for ci in range(c_in):
                    for ky in range(kh):
                        for kx in range(kw):
                            i = np.ravel_multi_index((ci, oy + ky, ox + kx), x.shape)
                            conns.append((i, w[co, ci, ky, kx]))
                units.append((j, b[co], conns))
    return units, (c_out, oh, ow)


def _ref_rule(rule, units, x: np.ndarray, r_out: np.ndarray) -> np.ndarray:
    xf, rf, r_in = x.ravel(), r_out.ravel(), np.zeros(x.size)
    for j, b, conns in units:
        z = np.array([xf[i] * w for i, w in conns])  # z_ij = x_i w_ij
        if isinstance(rule, Epsilon):
            zj = z.sum() + b
            den = zj + rule.epsilon * (1.0 if zj >= 0 else -1.0)
            share = z / den
        elif isinstance(rule, (ZPlus, AlphaBeta)):
            bias = isinstance(rule, AlphaBeta)
            zp, zn = np.maximum(z, 0), np.minimum(z, 0)
            dp = zp.sum() + (max(b, 0) if bias else 0)
            dn = zn.sum() + (min(b, 0) if bias else 0)
            alpha, beta = (rule.alpha, rule.beta) if bias else (1.0, 0.0)
            share = (alpha * zp / dp if dp else 0 * z) - (beta * zn / dn if dn else 0 * z)
        elif isinstance(rule, ZBox):
            ws = np.array([w for _, w in conns])
            z = z - rule.low * np.maximum(ws, 0) - rule.high * np.minimum(ws, 0)
            share = z / z.sum()
        elif isinstance(rule, Flat):
            share = np.full(len(conns), 1.0 / len(conns))
        for (i, _), s in zip(conns, share):
            r_in[i] += s * rf[j]
    return r_in.reshape(x.shape)


def _ref_forward_affine(units, shape, x):
    xf = x.ravel()
    out = np.zeros(int(np.prod(shape)))
    for j, b, conns in units:
        out[j] = sum(xf[i] * w for i, w in conns) + b
    return out.reshape(shape)


def _ref_pool(x: np.ndarray, k: int):
    c, h, w = x.shape
    oh, ow = h // k, w // k
    out, winner = np.zeros((c, oh, ow)), {}
    for ci in range(c):
        for oy in range(oh):
            for ox in range(ow):
                win = x[ci, oy * k:(oy + 1) * k, ox * k:(ox + 1) * k]
                dy, dx = np.unravel_index(np.argmax(win), win.shape)  # first max, like torch
                out[ci, oy, ox] = win[dy, dx]
                winner[(ci, oy, ox)] = (ci, oy * k + dy, ox * k + dx)
    return out, winner


def reference_lrp(net: nn.Sequential, x: np.ndarray, target: int, rule, first_rule=None):
    """Relevance of one input x (C, H, W) or (D,) for the target's pre-softmax score."""
    acts, info = [x], []
    for layer in net:
        a = acts[-1]
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            units, shape = _connections(layer, a)
            info.append(units)
            acts.append(_ref_forward_affine(units, shape, a))
        elif isinstance(layer, nn.ReLU):
            info.append(None)
            acts.append(np.maximum(a, 0))
        elif isinstance(layer, nn.MaxPool2d):
            out, winner = _ref_pool(a, layer.kernel_size)
            info.append(winner)
            acts.append(out)
        elif isinstance(layer, nn.Flatten):
            info.append(None)
            acts.append(a.ravel())
    r = np.zeros_like(acts[-1])
    r[target] = acts[-1][target]
    first = next(i for i, m in enumerate(net) if isinstance(m, (nn.Linear, nn.Conv2d)))
    for k in reversed(range(len(net))):
        layer, a = net[k], acts[k]
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            use = first_rule if (k == first and first_rule is not None) else rule
            r = _ref_rule(use, info[k], a, r)
        elif isinstance(layer, nn.MaxPool2d):
            r_in = np.zeros_like(a)
            for out_idx, in_idx in info[k].items():
                r_in[in_idx] += r[out_idx]
            r = r_in
        elif isinstance(layer, nn.Flatten):
            r = r.reshape(a.shape)
    return r, acts[-1]


# --------------------------------------------------------------------------- test nets


def _conv_net(seed: int, zero_bias: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2),  # (2, 12, 12) -> (3, 5, 5)
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # -> (4, 1, 1): pool drops a row
        nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3),
    ).double()
    for m in net:
        if hasattr(m, "bias") and m.bias is not None:
            nn.init.normal_(m.weight, std=0.7)
            nn.init.zeros_(m.bias) if zero_bias else nn.init.normal_(m.bias, std=0.3)
    return net


def _linear_net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.bias, std=0.3)
    return net.double()


ALL_RULES = [Epsilon(1.0), Epsilon(0.01), ZPlus(), AlphaBeta(2.0, 1.0), AlphaBeta(1.0, 0.0)]


@pytest.mark.parametrize("rule", ALL_RULES, ids=repr)
def test_linear_net_matches_reference(rule):
    net = _linear_net(0)
    x = torch.randn(4, 6, dtype=torch.float64)  # both signs: exercises x^- w^- terms
    for target in (None, 2):
        got = lrp(net, x, target, rule=rule, raw=True)
        for n in range(len(x)):
            t = int(got.target[n])
            want, out = reference_lrp(net, x[n].numpy(), t, rule)
            if target is None:
                assert t == int(np.argmax(out))
            np.testing.assert_allclose(got.raw[n], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("rule", ALL_RULES, ids=repr)
def test_conv_pool_net_matches_reference(rule):
    net = _conv_net(1)
    x = torch.rand(3, 2, 12, 12, dtype=torch.float64)
    got = lrp(net, x, rule=rule, raw=True)
    for n in range(len(x)):
        want, out = reference_lrp(net, x[n].numpy(), int(got.target[n]), rule)
        np.testing.assert_allclose(got.score[n], out[got.target[n]], rtol=1e-6)
        np.testing.assert_allclose(got.raw[n], want, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got.maps[n], want.sum(0), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("first", [ZBox(0.0, 1.0), Flat()], ids=repr)
def test_first_layer_rules_match_reference(first):
    net = _conv_net(2)
    x = torch.rand(2, 2, 12, 12, dtype=torch.float64)
    got = lrp(net, x, 1, rule="epsilon", first_rule=first, raw=True)
    for n in range(len(x)):
        want, _ = reference_lrp(net, x[n].numpy(), 1, Epsilon(1.0), first_rule=first)
        np.testing.assert_allclose(got.raw[n], want, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- conservation


def _paper_net() -> nn.Module:
    # Keras init: Glorot weights, zero biases; float64 for tight sums
    size = min_input_size(6)
    return build_model(ModelConfig(input_size=size), init="keras", seed=3).double(), size


@pytest.mark.parametrize("rule", [Epsilon(1e-9), ZPlus(), AlphaBeta(1.0, 0.0), AlphaBeta(2.0, 1.0)],
                         ids=repr)
def test_conservation_on_paper_cnn(rule):
    model, size = _paper_net()
    images = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    for target in (0, 1):  # one of the two scores is negative: the sign is conserved too
        got = lrp(model, images, target, rule=rule)
        np.testing.assert_allclose(got.maps.sum(axis=(1, 2)), got.score, rtol=1e-6)
        if isinstance(rule, ZPlus):  # inputs >= 0: every pixel shares the score's sign
            assert np.all(got.maps * np.sign(got.score)[:, None, None] >= -1e-12)


def test_epsilon_one_absorbs_relevance_and_biases_break_conservation():
    net = _conv_net(4, zero_bias=True)
    x = torch.rand(2, 2, 12, 12, dtype=torch.float64)
    exact, damped = lrp(net, x, rule=Epsilon(1e-9)), lrp(net, x, rule=Epsilon(1.0))
    np.testing.assert_allclose(exact.maps.sum(axis=(1, 2)), exact.score, rtol=1e-6)
    assert np.all(np.abs(damped.maps.sum(axis=(1, 2))) < np.abs(damped.score))


def test_float32_model_and_uint8_images():
    model = build_model(ModelConfig(input_size=190), seed=0)
    images = np.random.default_rng(1).integers(0, 256, (3, 190, 190, 3), dtype=np.uint8)
    got = lrp(model, images, batch_size=2)  # two batches: per-image targets line up
    assert got.maps.shape == (3, 190, 190) and got.maps.dtype == np.float32
    assert got.raw is None and got.target.shape == (3,)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        np.testing.assert_array_equal(got.target, model(x).argmax(1).numpy())


# --------------------------------------------------------------------------- model left alone


def model_state(model: nn.Module) -> dict:
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": [p.grad for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "dict_keys": [sorted(m.__dict__) for m in model.modules()],
        "hooks": [
            [len(getattr(m, name)) for name in ("_forward_hooks", "_forward_pre_hooks",
                                                "_backward_hooks", "_backward_pre_hooks")]
            for m in model.modules()
        ],
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["params"].keys() == after["params"].keys()
    for k in before["params"]:
        assert torch.equal(before["params"][k], after["params"][k]), k
    assert all(g is None for g in after["grads"])
    for key in ("requires_grad", "training", "dict_keys", "hooks"):
        assert before[key] == after[key], key


@pytest.mark.parametrize("rule", list(RULES))
def test_model_is_left_as_found(rule):
    model = build_model(ModelConfig(input_size=190), seed=0)
    model.train()  # an unusual state must survive too
    images = np.random.default_rng(2).integers(0, 256, (1, 190, 190, 3), dtype=np.uint8)
    before = model_state(model)
    lrp(model, images, rule=rule, first_rule="zbox")
    assert_same_state(before, model_state(model))


def test_registry_names():
    assert isinstance(get_rule("epsilon"), Epsilon) and get_rule("epsilon").epsilon == 1.0
    assert get_rule("flat", FIRST_RULES) == Flat()
    with pytest.raises(LeukolearnError, match="choose from"):
        get_rule("gamma")
    with pytest.raises(LeukolearnError, match="no rule for"):
        lrp(nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double(), torch.rand(1, 3).double())
