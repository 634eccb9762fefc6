"""The fast paths compute what the plain PyTorch layers compute (up to float rounding).

The fused C kernels (`leukolearn.model.kernels`) replace Conv3x3 + ReLU + MaxPool blocks and the
augmentation during training and prediction; each is compared here with the slow,
obviously-correct PyTorch reference: outputs, gradients, the random draws, and the device
handling. Kernel tests skip where no C compiler builds them (the code then runs PyTorch),
except under CI (CI=true), where they fail: CI has a compiler, so a kernel that does not
build there is a bug (a compiler the C no longer suits), not a missing tool.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leukolearn.model import kernels
from leukolearn.training.augment import augment_batch, random_affine
from leukolearn.data.synthetic import make_binary
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.training.config import TrainConfig
from leukolearn.training.loop import (_batch, _train_one_epoch, predict_proba, resolve_device, to_tensor, train_model)


kernels.enabled()  # built at collection, into the user's cache, not once per test's cache


@pytest.fixture
def _kernels_built():
    if kernels.enabled():
        return
    reason = kernels.problem()
    if os.environ.get("CI") == "true" and os.environ.get("LEUKOLEARN_KERNELS", "1") != "0":
        pytest.fail(f"the fused C kernels did not build under CI: {reason}")
    pytest.skip(f"kernels off: {reason}")


needs_kernels = pytest.mark.usefixtures("_kernels_built")


def _reference_block(x, w, b):
    return F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)  # the model's order: conv, ReLU, pool


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@needs_kernels
@pytest.mark.parametrize("cin, cout, h, w", [
    (3, 4, 257, 257), (4, 8, 127, 127), (8, 8, 62, 62), (8, 16, 30, 30), (16, 16, 14, 14),
    (16, 16, 6, 6), (4, 8, 37, 50), (8, 4, 190, 41),
])
def test_fused_block_matches_pytorch_outputs_and_gradients(cin, cout, h, w):
    g = torch.Generator().manual_seed(cin * 100 + h)
    x = torch.rand(3, cin, h, w, generator=g).requires_grad_(cin % 4 == 0)
    weight = (torch.randn(cout, cin, 3, 3, generator=g) * 0.4).requires_grad_()
    bias = (torch.randn(cout, generator=g) * 0.1).requires_grad_()
    inputs = [weight, bias] + ([x] if x.requires_grad else [])
    ref = _reference_block(x, weight, bias)
    out = kernels.conv_pool_relu(x, weight, bias)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad_out = torch.randn(ref.shape, generator=g)
    for a, b in zip(torch.autograd.grad(out, inputs, grad_out),
                    torch.autograd.grad(ref, inputs, grad_out)):
        assert _rel(a, b) < 1e-4


@needs_kernels
def test_fused_block_gives_ties_to_the_first_window_position_like_max_pool():
    # A constant image makes every pooling window a 4-way tie: PyTorch sends the gradient
    # to the window's first (top-left) position; so must the kernel.
    x = torch.full((2, 4, 20, 20), 0.5, requires_grad=True)
    weight = torch.full((4, 4, 3, 3), 0.1, requires_grad=True)
    bias = torch.zeros(4, requires_grad=True)
    grads = [torch.autograd.grad(f(x, weight, bias).sum(), [x, weight, bias])
             for f in (kernels.conv_pool_relu, _reference_block)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@needs_kernels
def test_first_block_reads_uint8_images_as_stored():
    images = torch.from_numpy(make_binary(3, size=65, seed=1).images)  # (B, H, W, 3) uint8
    weight, bias = torch.randn(4, 3, 3, 3), torch.randn(4) * 0.1
    x = images.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(kernels.conv_pool_relu_uint8(images, weight, bias),
                               _reference_block(x, weight, bias), atol=1e-5, rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("size", [257, 64, 33])
def test_fused_augmentation_samples_the_images_augment_batch_does(size):
    images = to_tensor(make_binary(4, size=size, seed=2).images)  # (N, 3, H, W) uint8
    index = torch.tensor([5, 0, 7, 2, 2])
    ref = augment_batch(images[index].float() / 255, torch.Generator().manual_seed(9))
    theta = random_affine(len(index), torch.Generator().manual_seed(9))
    crop = size - size % 2
    out = kernels.augment_uint8(images, index, theta, crop)
    # the same draws, the same bilinear sampling; only float rounding of coordinates differs
    assert (out - ref[..., :crop, :crop]).abs().max() < 1e-4


@pytest.mark.parametrize("config", [TrainConfig(), TrainConfig(scale_jitter=0.3, colour_jitter=0.2)],
                         ids=["paper", "scale-and-colour"])
def test_both_training_paths_draw_the_same_random_numbers(config):
    images = to_tensor(make_binary(4, size=40, seed=3).images)
    batch = torch.tensor([1, 3, 4])
    g_fused, g_plain = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    a = _batch(images, batch, config, g_fused, fused=kernels.enabled())
    with kernels.disabled():
        b = _batch(images, batch, config, g_plain, fused=False)
    assert (a - b[..., :a.shape[-2], :a.shape[-1]]).abs().max() < 1e-4
    assert torch.equal(g_fused.get_state(), g_plain.get_state())


@pytest.mark.parametrize("size", [257, 190])
def test_forward_fused_equals_forward_with_the_same_gradients(size):
    model = build_model(ModelConfig(input_size=size), seed=5)
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(6))
    y = torch.tensor([0, 1, 1, 0])
    grads = []
    for forward in (model.forward, model.forward_fused):
        model.zero_grad()
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_ref, g_ref), (loss_fused, g_fused) = grads
    torch.testing.assert_close(loss_fused, loss_ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(g_fused, g_ref):
        assert _rel(a, b) < 1e-3


def test_forward_fused_falls_back_for_filters_the_kernels_do_not_take():
    config = ModelConfig(input_size=64, filters=(3, 5, 6))
    model = build_model(config, seed=0).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_disabled_kernels_give_pytorchs_layers_exactly():
    model = build_model(ModelConfig(input_size=190), seed=1).eval()
    x = torch.rand(2, 3, 190, 190)
    with kernels.disabled(), torch.no_grad():
        assert not kernels.enabled()
        # ReLU after the pool instead of before: the same numbers, not just close ones
        assert torch.equal(model.forward_fused(x), model(x))


def test_predict_proba_fast_path_matches_plain_forward():
    cells = make_binary(6, size=190, seed=7)
    model = build_model(ModelConfig(input_size=190), seed=2).eval()
    with torch.no_grad():
        x = to_tensor(cells.images).float() / 255
        ref = torch.softmax(model(x), dim=1).numpy()
    probs = predict_proba(model, cells.images, batch_size=5)
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_one_epoch_takes_the_same_steps_on_both_paths():
    # One batch, one optimiser step from the same weights: the updates agree closely
    # (RMSprop's first step is lr * g / (sqrt(0.1) |g|), about 3.2e-3 per weight whatever g
    # is, so compare with that scale in mind: a sign flip would show as 6e-3).
    cells = make_binary(3, size=190, seed=8)
    x_train = to_tensor(cells.images[:5])
    y_train = torch.from_numpy(cells.labels[:5])
    config = TrainConfig.binary()
    after = []
    for fused in (kernels.enabled(), False):
        model = build_model(ModelConfig(input_size=190), seed=3)
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-8)
        with kernels.disabled() if not fused else nullcontext():
            loss = _train_one_epoch(model, optimizer, x_train, y_train, config,
                                    torch.Generator().manual_seed(1), fused)
        after.append((loss, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (loss_a, p_a), (loss_b, p_b) = after
    assert loss_a == pytest.approx(loss_b, rel=1e-4)
    assert (p_a - p_b).abs().max() < 1e-3


def test_training_is_deterministic_on_the_fast_path():
    cells = make_binary(8, size=190, seed=9)
    config = TrainConfig.binary(max_epochs=2, patience=5)
    a = train_model(cells, np.arange(10), np.arange(10, 16), config, seed=3)
    b = train_model(cells, np.arange(10), np.arange(10, 16), config, seed=3)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_device_auto_means_cpu_without_a_gpu():
    assert resolve_device("auto") == torch.device("cpu")
    cells = make_binary(4, size=190, seed=10)
    config = TrainConfig.binary(max_epochs=1, patience=1, device="auto")
    result = train_model(cells, np.arange(6), np.arange(6, 8), config, seed=0)
    assert next(result.model.parameters()).device.type == "cpu"
    assert np.isfinite(result.history[0]["train_loss"])


# ---- building: which compiler, and what happens without one ----------------------------
_CHECK = textwrap.dedent("""
    import torch, torch.nn.functional as F
    from leukolearn.model import kernels
    g = torch.Generator().manual_seed(0)
    # 47 columns: 22 pooled, not a multiple of 4, 8 or 16 (the partial-chunk paths run)
    x = torch.rand(2, 4, 37, 47, generator=g, requires_grad=True)
    w = (torch.randn(8, 4, 3, 3, generator=g) * 0.4).requires_grad_()
    b = (torch.randn(8, generator=g) * 0.1).requires_grad_()
    for _ in range(3):  # one build attempt, one warning, however often it is asked
        out = kernels.conv_pool_relu(x, w, b)
    ref = F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)
    grads = torch.autograd.grad(out, [x, w, b], torch.ones_like(out))
    refs = torch.autograd.grad(ref, [x, w, b], torch.ones_like(ref))
    err = max(float((p - q).abs().max() / q.abs().max())
              for p, q in zip((out.detach(), *grads), (ref.detach(), *refs)))
    if kernels.enabled():  # the augmentation too (absolute: pixels lie in [0, 1])
        from leukolearn.training.augment import augment_batch, random_affine
        images = (torch.rand(4, 3, 45, 45, generator=g) * 255).to(torch.uint8)
        index = torch.tensor([3, 0, 2, 2, 1])
        # 43 px out: not a multiple of any width (the last vector is partial)
        aug = kernels.augment_uint8(images, index, random_affine(5, torch.Generator().manual_seed(1)), 43)
        aug_ref = augment_batch(images[index].float() / 255, torch.Generator().manual_seed(1))
        err = max(err, float((aug - aug_ref[..., :43, :43]).abs().max()))
    print(kernels.enabled(), kernels.compiler(), err, sep="|")
""")


def _check_in_subprocess(tmp_path, **env):
    env = {**os.environ, "LEUKOLEARN_CACHE": str(tmp_path / "cache"), **env}
    env.pop("LEUKOLEARN_KERNELS", None)
    run = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    on, built_with, err = run.stdout.strip().split("|")
    return on == "True", built_with, float(err), run.stderr


@pytest.mark.slow  # a fresh build per compiler, in a subprocess
@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_the_kernels_build_with_gcc_and_with_clang(tmp_path, compiler):
    path = shutil.which(compiler)
    if path is None:
        # `make test` (CI) installs clang, so a missing compiler there is a broken setup.
        if os.environ.get("CI") == "true":
            pytest.fail(f"{compiler} is not installed; CI builds the kernels with gcc and clang")
        pytest.skip(f"{compiler} is not installed (apt-get install {compiler})")
    on, built_with, err, _ = _check_in_subprocess(tmp_path, CC=compiler)
    assert on and built_with == path
    assert err < 1e-5  # outputs and gradients as PyTorch's layers compute them, relative


@pytest.mark.slow  # a fresh build per width, in a subprocess
@pytest.mark.parametrize("defines", ["-DVW=4", "-DVW=8", "-DVW=16", "-DVW=8 -DOGH=4"])
def test_the_kernels_compute_the_same_at_every_vector_width(tmp_path, defines):
    # A build uses the CPU's widest vectors (16 floats with AVX-512, 8 with AVX2, 4 with
    # SSE or NEON); a CPU runs only its own width, so each is forced here with -D: a lane
    # count or shuffle that is wrong at one width shows on any x86 or arm64 machine.
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    on, built_with, err, stderr = _check_in_subprocess(tmp_path, CC=f"gcc {defines}")
    assert on and built_with.endswith(f"gcc {defines}"), stderr
    assert err < 1e-4  # outputs, gradients and the augmentation as PyTorch computes them


@pytest.mark.slow
def test_without_a_compiler_one_warning_says_so_and_pytorch_runs(tmp_path):
    nothing = tmp_path / "empty-path"
    nothing.mkdir()
    on, built_with, err, stderr = _check_in_subprocess(tmp_path, PATH=str(nothing), CC="")
    assert (on, built_with) == (False, "None")
    assert err == 0.0  # PyTorch's own layers ran
    lines = [line for line in stderr.splitlines() if "kernels" in line]
    assert len(lines) == 1, stderr
    assert "cc: not found; gcc: not found; clang: not found" in lines[0]
    assert "PyTorch's layers run instead (slower; equal up to float rounding)" in lines[0]


# ---- the digest memo that makes a second load of a large dataset fast --------------------
def test_file_digest_memo_returns_the_content_hash_without_reading(tmp_path, monkeypatch):
    from leukolearn.data import cache

    monkeypatch.setattr(cache, "_RACY_NS", 0)  # the file was written just now
    f = tmp_path / "img.tiff"
    f.write_bytes(b"pixels" * 1000)
    expected = hashlib.blake2b(f.read_bytes(), digest_size=20).hexdigest()
    assert cache.file_digest(f) == expected  # hashed, then remembered
    monkeypatch.setattr(cache, "_hash_bytes", lambda p: pytest.fail(f"{p} was read again"))
    assert cache.file_digest(f) == expected


def test_file_digest_memo_notices_a_change_that_keeps_size_and_mtime(tmp_path, monkeypatch):
    from leukolearn.data import cache

    monkeypatch.setattr(cache, "_RACY_NS", 0)
    f = tmp_path / "img.tiff"
    f.write_bytes(b"a" * 4096)
    before = cache.file_digest(f)
    st = f.stat()
    time.sleep(0.05)  # past the file system's clock tick (the racy window is off here)
    f.write_bytes(b"b" * 4096)  # same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and mtime put back: ctime moved
    after = cache.file_digest(f)
    assert after != before
    assert after == hashlib.blake2b(b"b" * 4096, digest_size=20).hexdigest()


def test_file_digest_memo_skips_files_written_just_now(tmp_path, monkeypatch):
    from leukolearn.data import cache

    f = tmp_path / "fresh.png"
    f.write_bytes(b"x" * 100)
    cache.file_digest(f)
    calls = []
    monkeypatch.setattr(cache, "_hash_bytes", lambda p: calls.append(p) or "h")
    cache.file_digest(f)
    assert calls == [f]  # not remembered: a write in the same clock tick could hide
