"""Pillow's bicubic resize of uint8 RGB images, bit for bit, in a fifth of its time.

`fit_to_square` (decode.py) resizes every cell with Pillow's
`Image.resize(size, Image.Resampling.BICUBIC)`; at 363 -> 257 px that was most of the time
`predict` spent per cell (issue #15). The pixels the networks were trained on must not
change, so `resize_bicubic` computes exactly what Pillow computes:

- the filter coefficients as Pillow's `precompute_coeffs` does (src/libImaging/Resample.c),
  here in Python floats (IEEE doubles, no fused multiply-add, so the same roundings),
  then rounded to int32 with 22 fractional bits as its `normalize_coeffs_8bpc` does;
  cached per (input size, output size);
- the two passes in `resize.c` (package data) with Pillow's integer arithmetic, which is
  exact in any order and so vectorises without changing a pixel;
- the order of the passes as Pillow 13 picks it: vertical first when the height shrinks
  and 2 x (width lost) < height lost, else horizontal first (found by comparing with Pillow
  over many sizes: tests/test_fast_resize.py; a square image is always horizontal first);
  the first pass covers only the rows (columns) the second reads.

The C file is compiled on first use (`leukolearn.native`: $CC, cc, gcc or clang, cached
in `<cache root>/native/`). Before it is used, the loaded library must reproduce Pillow
exactly on a few probe images (shrinking, enlarging, both pass orders): another Pillow
version that computed otherwise would fail the probe. Where it cannot be built or fails
the probe, one warning says so and Pillow resizes instead (the same pixels, slower);
`LEUKOLEARN_NATIVE_RESIZE=0` uses Pillow without the warning. Anything but a uint8
(H, W, 3) array goes to Pillow too. The C call releases the GIL (ctypes), so threads
decoding in parallel resize in parallel.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import math

import numpy as np
from PIL import Image

from leukolearn.data.cache import cache_root
from leukolearn.native import NativeLibrary

SWITCH = "LEUKOLEARN_NATIVE_RESIZE"
PRECISION_BITS = 22  # Pillow's for 8-bit images: 32 - 8 - 2
BICUBIC_SUPPORT = 2.0

_log = logging.getLogger(__name__)


def resize_bicubic(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """`np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BICUBIC))`,
    computed natively for uint8 (H, W, 3) arrays, bit-identical."""
    lib = _native.load()
    if (lib is None or not isinstance(img, np.ndarray) or img.dtype != np.uint8
            or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1
            or width < 1 or height < 1):
        return pillow_resize(img, width, height)
    return _resize(lib, img, int(width), int(height))


def pillow_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """The reference: Pillow's bicubic resize."""
    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BICUBIC))


def enabled() -> bool:
    """Whether `resize_bicubic` runs the native code in this process."""
    return _native.load() is not None


def problem() -> str | None:
    """Why the native resize is not used (None when it is)."""
    return _native.problem()


def simd() -> bool:
    """Whether the loaded library has the AVX2 code (else the plain C loops)."""
    lib = _native.load()
    return bool(lib is not None and lib.resize_rgb8_simd())


def vertical_first(h: int, w: int, height: int, width: int) -> bool:
    """Pillow 13's order of the two passes (module docstring)."""
    return height < h and 2 * (w - width) < h - height


def _resize(lib: ctypes.CDLL, img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.copy()  # Pillow copies too
    if not img.flags.c_contiguous:
        img = np.ascontiguousarray(img)
    kh, bh = coefficients(w, width)
    kv, bv = coefficients(h, height)
    out = np.empty((height, width, 3), dtype=np.uint8)
    status = lib.resize_rgb8(img.ctypes.data, img.strides[0], h, w, out.ctypes.data, height,
                             width, kh.ctypes.data, bh.ctypes.data, kh.shape[1],
                             kv.ctypes.data, bv.ctypes.data, kv.shape[1],
                             int(vertical_first(h, w, height, width)))
    if status != 0:
        raise MemoryError(f"resizing a {w} x {h} image to {width} x {height}")
    return out


def _bicubic(x: float) -> float:
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@functools.lru_cache(maxsize=64)
def coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bicubic filter from in_size to out_size pixels: int32 coefficients
    (out_size, ksize) and int32 (first input pixel, count) per output pixel. Each line of
    Pillow's C, in its order (box = the whole image)."""
    in0, in1 = 0.0, float(in_size)
    scale = filterscale = (in1 - in0) / out_size
    if filterscale < 1.0:
        filterscale = 1.0
    support = BICUBIC_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    k = np.zeros((out_size, ksize), dtype=np.int32)
    bounds = np.zeros((out_size, 2), dtype=np.int32)
    one = float(1 << PRECISION_BITS)
    for xx in range(out_size):
        center = in0 + (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)  # int(): towards zero, as C's cast
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = []
        ww = 0.0
        for x in range(xmax):
            w = _bicubic((x + xmin - center + 0.5) * ss)
            weights.append(w)
            ww += w
        for x, w in enumerate(weights):
            if ww != 0.0:
                w /= ww
            k[xx, x] = int(-0.5 + w * one) if w < 0 else int(0.5 + w * one)
        bounds[xx] = xmin, xmax
    k.setflags(write=False)
    bounds.setflags(write=False)
    return k, bounds


# Probes the loaded library must pass: (h, w) -> (height, width), covering shrinking,
# enlarging, one pass only, and both orders of two passes.
_PROBES = (((37, 37), (23, 23)), ((11, 11), (29, 29)), ((40, 30), (10, 28)),
           ((30, 40), (20, 10)), ((9, 50), (9, 17)), ((50, 9), (71, 9)), ((64, 48), (35, 70)))


def _check(lib: ctypes.CDLL) -> None:
    """ValueError unless the library gives Pillow's pixels on the probes."""
    rng = np.random.default_rng(15)
    for (h, w), (height, width) in _PROBES:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[::3] = img[::3] // 128 * 255  # hard edges: values that clip
        if not np.array_equal(_resize(lib, img, width, height),
                              pillow_resize(img, width, height)):
            raise ValueError(f"its {w} x {h} -> {width} x {height} resize differs from Pillow "
                             f"{Image.__version__}'s")


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.resize_rgb8.argtypes = [p, i64, i32, i32, p, i32, i32, p, p, i32, p, p, i32, i32]
    lib.resize_rgb8.restype = i32
    lib.resize_rgb8_simd.argtypes = []
    lib.resize_rgb8_simd.restype = i32
    _check(lib)
    return lib


def _new_native(**overrides) -> NativeLibrary:
    """The library's description (tests make their own, e.g. with other flags)."""
    settings = dict(
        folder=lambda: cache_root() / "native", declare=_declare, switch=SWITCH, log=_log,
        common_flags=["-std=gnu11", "-fPIC", "-shared"], libraries=(),
        prefix="leukolearn-resize-", pronoun="it",
        warning="leukolearn's native image resize is not available: %s. Pillow resizes "
                "instead (the same pixels, slower); " + SWITCH + "=0 turns it off without "
                "this warning.")
    return NativeLibrary("leukolearn.data", "resize.c", **{**settings, **overrides})


_native = _new_native()
