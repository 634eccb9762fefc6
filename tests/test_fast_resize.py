"""The native bicubic resize gives Pillow's pixels, bit for bit (leukolearn.data.fast_resize).

The training pixels must not change: every cell goes through `fit_to_square`, which now
resizes with `resize_bicubic`. Compared with Pillow's `Image.resize(BICUBIC)` on random
images of many sizes (shrinking as PBC's 363 -> 257, enlarging as ALL-IDB2's 103 -> 257,
the identity of AML's 400 -> 400, non-square images in both pass orders), with the AVX2
code and with the plain C loops, and on the real images where ../shared/data is present.
Tests that need the native code skip where no C compiler builds it, except under CI
(CI=true), where they fail, as the fused kernels' tests do.
"""
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from leukolearn.data import fast_resize
from leukolearn.data.decode import _pad_to_square, fit_mask_to_square, fit_to_square, read_image
from leukolearn.data.fast_resize import pillow_resize, resize_bicubic

fast_resize.enabled()  # built at collection, into the user's cache, not once per test's cache


@pytest.fixture
def native():
    if fast_resize.enabled():
        return
    reason = fast_resize.problem()
    if os.environ.get("CI") == "true" and os.environ.get(fast_resize.SWITCH, "1") != "0":
        pytest.fail(f"the native resize did not build under CI: {reason}")
    pytest.skip(f"native resize off: {reason}")


needs_native = pytest.mark.usefixtures("native")


def _image(rng, h, w):
    """Noise with hard 0 / 255 bands: sums that clip below 0 and above 255."""
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[::4] = img[::4] // 128 * 255
    img[:, 1::5] = img[:, 1::5] // 128 * 255
    return img


def _same(img, width, height, resize=resize_bicubic):
    np.testing.assert_array_equal(resize(img, width, height), pillow_resize(img, width, height),
                                  err_msg=f"{img.shape[1]} x {img.shape[0]} -> {width} x {height}")


@needs_native
@pytest.mark.parametrize("size, out", [
    (363, 257), (103, 257), (400, 400), (400, 257), (600, 257), (40, 257), (257, 256),
    (256, 257), (360, 299), (41, 40), (600, 41), (1, 7), (7, 1), (2, 3), (31, 32), (33, 64),
])
def test_square_images_get_pillows_pixels(size, out):
    _same(_image(np.random.default_rng(size * 1000 + out), size, size), out, out)


@needs_native
def test_many_square_sizes_get_pillows_pixels():
    rng = np.random.default_rng(0)
    for _ in range(60):
        size, out = (int(v) for v in rng.integers(40, 601, 2))
        _same(_image(rng, size, size), out, out)


@needs_native
def test_non_square_images_in_both_pass_orders_get_pillows_pixels():
    rng = np.random.default_rng(1)
    orders = set()
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        height, width = (int(v) for v in rng.integers(1, 260, 2))
        orders.add(fast_resize.vertical_first(h, w, height, width))
        _same(_image(rng, h, w), width, height)
    assert orders == {True, False}


@needs_native
def test_one_pass_only_and_the_identity():
    rng = np.random.default_rng(2)
    img = _image(rng, 50, 70)
    for width, height in [(70, 31), (70, 90), (23, 50), (150, 50), (70, 50)]:
        _same(img, width, height)
    same = resize_bicubic(img, 70, 50)
    assert same is not img and np.array_equal(same, img)  # a copy, as Pillow makes


@needs_native
def test_views_and_strided_arrays_are_read_correctly():
    rng = np.random.default_rng(3)
    big = _image(rng, 120, 130)
    for view in (big[10:100, 5:95], big[::2, ::2], big[::-1], np.asfortranarray(big[:90, :90])):
        _same(view, 57, 57)


def test_other_inputs_go_to_pillow():
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bicubic(gray, 20, 20), pillow_resize(gray, 20, 20))
    rgba = rng.integers(0, 256, (30, 30, 4), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bicubic(rgba, 45, 45), pillow_resize(rgba, 45, 45))


def test_coefficients_are_cached_and_read_only():
    k, bounds = fast_resize.coefficients(363, 257)
    assert fast_resize.coefficients(363, 257)[0] is k
    assert k.dtype == bounds.dtype == np.int32 and k.shape == (257, 7) and bounds.shape == (257, 2)
    assert not k.flags.writeable
    # each row's integer weights sum to about 1 << 22 (Pillow's normalisation, rounded)
    assert np.abs(k.sum(1) - (1 << 22)).max() <= 4


@needs_native
def test_the_plain_c_loops_give_pillows_pixels_too(tmp_path):
    """Built with plain -O3 (on x86: SSE2, no AVX2), the portable block runs: the same."""
    lib = fast_resize._new_native(folder=lambda: tmp_path, flag_sets=[["-O3"]]).load()
    assert lib is not None
    if os.uname().machine in ("x86_64", "AMD64"):
        assert lib.resize_rgb8_simd() == 0
    rng = np.random.default_rng(5)
    for h, w, height, width in [(363, 363, 257, 257), (103, 103, 257, 257), (80, 60, 20, 55),
                                (60, 80, 31, 20), (33, 40, 33, 7), (5, 9, 3, 12)]:
        _same(_image(rng, h, w), width, height,
              resize=lambda img, wd, ht: fast_resize._resize(lib, img, wd, ht))


@needs_native
def test_threads_resize_in_parallel_with_the_same_pixels():
    rng = np.random.default_rng(6)
    images = [_image(rng, 363, 363) for _ in range(12)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda im: resize_bicubic(im, 257, 257), images))
    for img, out in zip(images, results):
        np.testing.assert_array_equal(out, pillow_resize(img, 257, 257))


def _reference_fit(img, size):
    """fit_to_square as it was: edge padding, then Pillow."""
    square = _pad_to_square(img)
    if square.shape[0] == size:
        return square
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC))


@needs_native
@pytest.mark.parametrize("h, w, size", [(360, 363, 257), (103, 103, 257), (100, 103, 257),
                                        (400, 400, 400), (400, 400, 257), (57, 90, 64)])
def test_fit_to_square_is_unchanged(h, w, size):
    img = _image(np.random.default_rng(h + w + size), h, w)
    np.testing.assert_array_equal(fit_to_square(img, size), _reference_fit(img, size))


def test_masks_keep_pillows_nearest_resize():
    mask = np.random.default_rng(7).integers(0, 3, (90, 80), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(_pad_to_square(mask)).resize(
        (257, 257), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(fit_mask_to_square(mask, 257), expected)


def test_switched_off_pillow_resizes_without_a_warning(monkeypatch, caplog):
    monkeypatch.setenv(fast_resize.SWITCH, "0")
    monkeypatch.setattr(fast_resize, "_native", fast_resize._new_native())
    with caplog.at_level(logging.WARNING):
        assert not fast_resize.enabled()
        img = _image(np.random.default_rng(8), 100, 103)
        np.testing.assert_array_equal(fit_to_square(img, 257), _reference_fit(img, 257))
    assert fast_resize.problem() == f"turned off by {fast_resize.SWITCH}=0"
    assert not caplog.records


@needs_native
def test_a_library_that_differs_from_pillow_is_refused_with_one_warning(monkeypatch, tmp_path,
                                                                         caplog):
    """The probe at load time: here Pillow is made to answer otherwise."""
    real = fast_resize.pillow_resize
    monkeypatch.setattr(fast_resize, "pillow_resize", lambda img, w, h: real(img, w, h) ^ 1)
    library = fast_resize._new_native(folder=lambda: tmp_path)
    with caplog.at_level(logging.WARNING):
        assert library.load() is None and library.load() is None
    assert "differs from Pillow" in library.problem()
    assert len(caplog.records) == 1 and "Pillow resizes instead" in caplog.messages[0]


_CHECK = textwrap.dedent("""
    import numpy as np
    from leukolearn.data import fast_resize
    from leukolearn.data.decode import fit_to_square, _pad_to_square
    img = np.random.default_rng(0).integers(0, 256, (100, 103, 3), dtype=np.uint8)
    for _ in range(3):  # one build attempt, one warning, however often it is asked
        out = fit_to_square(img, 257)
    ref = fast_resize.pillow_resize(_pad_to_square(img), 257, 257)
    print(fast_resize.enabled(), bool((out == ref).all()))
""")


def test_without_a_compiler_one_warning_says_so_and_pillow_resizes(tmp_path):
    nothing = tmp_path / "empty-path"
    nothing.mkdir()
    env = {**os.environ, "LEUKOLEARN_CACHE": str(tmp_path / "cache"), "PATH": str(nothing),
           "CC": ""}
    env.pop(fast_resize.SWITCH, None)
    run = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]
    lines = [line for line in run.stderr.splitlines() if "resize" in line]
    assert len(lines) == 1, run.stderr
    assert "no C compiler could build it: cc: not found; gcc: not found; clang: not found" \
        in lines[0]
    assert "Pillow resizes instead (the same pixels, slower)" in lines[0]


# ---- the real images ----------------------------------------------------------------------
def _real_files(shared_data, step):
    files = (sorted((shared_data / "pbc-subset").glob("*/*.jpg"))[::step]
             + sorted((shared_data / "all-idb2-103px").glob("*.jpg"))[::max(1, step // 8)]
             + sorted((shared_data / "aml-cytomorphology-lmu-sample").glob("*/*.tiff"))[::step])
    if not files:
        pytest.skip("no PBC, ALL-IDB2 or AML images in shared data")
    return files


def _check_real(files):
    for path in files:
        img = read_image(path)
        for size in {257, max(img.shape[:2])}:  # the model's size, and no resize at all
            np.testing.assert_array_equal(fit_to_square(img, size), _reference_fit(img, size),
                                          err_msg=f"{path} at {size}")


@needs_native
def test_real_cells_get_pillows_pixels(shared_data):
    _check_real(_real_files(shared_data, step=80))  # 30 PBC, 26 ALL-IDB2, a few AML


@needs_native
@pytest.mark.realdata
def test_every_real_cell_gets_pillows_pixels(shared_data):
    _check_real(_real_files(shared_data, step=1))  # 2,400 PBC, 260 ALL-IDB2, AML's sample


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_the_resize_builds_with_gcc_and_with_clang(tmp_path, monkeypatch, compiler):
    path = shutil.which(compiler)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{compiler} is not installed; CI builds the C code with gcc and clang")
        pytest.skip(f"{compiler} is not installed (apt-get install {compiler})")
    monkeypatch.setenv("CC", compiler)
    library = fast_resize._new_native(folder=lambda: tmp_path)
    lib = library.load()
    assert lib is not None and library.compiler() == path, library.problem()
    rng = np.random.default_rng(9)
    for h, w, height, width in [(363, 363, 257, 257), (103, 103, 257, 257), (80, 60, 20, 55)]:
        _same(_image(rng, h, w), width, height,
              resize=lambda img, wd, ht: fast_resize._resize(lib, img, wd, ht))
