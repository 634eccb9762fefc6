"""Decoding one image file into uint8 RGB, and fitting it to the model's square input.

The policy, in one place (bump `DECODE_POLICY_VERSION` when it changes, so cached arrays
made under the old policy are not reused):

- JPEG, PNG and BMP are read with Pillow, TIFF with tifffile (Pillow does not read the
  16-bit or many-sample TIFFs microscopes write). Where simplejpeg is installed, it
  decodes colour (YCbCr) and gray JPEGs instead: the same libjpeg-turbo decoder with the
  same settings (accurate integer DCT, fancy upsampling), so bit-identical pixels
  (tests/test_parallel_decode.py compares the PBC JPEGs, all 2,400 under `-m realdata`,
  and each subsampling), in 0.45 instead of 0.67 ms for a 360 x 363 cell. Any other
  JPEG (CMYK), and any file it refuses or warns about, goes to Pillow, whose result or
  error message then stands. `LEUKOLEARN_SIMPLEJPEG=0` switches it off.
  Only the first page (page 0) of a multi-page TIFF, or the first frame of an animated
  PNG, is used; `count_pages` says how many a file holds, so that `load_dataset` can warn.
- Alpha is dropped, not composited: AML-Cytomorphology_LMU stores a constant alpha of
  255, and compositing onto a guessed background colour would invent pixels.
- Gray (2-D or one channel) is repeated into three channels; gray + alpha becomes gray.
- Unsigned integers are scaled by their dtype's range (16-bit 65535 -> 255); floats must
  lie in [0, 1] and are scaled by 255; NaN or infinite values are an error.
- A non-square image is padded to a square by repeating its edge pixels (the smear
  background continues, where a black border would be a feature the network can learn),
  centred, then resized with bicubic interpolation (antialiased when shrinking).
  Masks get the same padding and nearest-neighbour resizing, so they stay aligned.

Every failure raises `BadFileError(path, problem)`: decoders raise a zoo of exception
types on bad input (OSError, ValueError, SyntaxError, struct.error, zlib.error, ...), and
a user needs the file name, not the decoder's internals.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS
from leukolearn.data.fast_resize import resize_bicubic
from leukolearn.errors import BadFileError

DECODE_POLICY_VERSION = 1
MAX_PIXELS = 100_000_000  # a single-cell crop is < 1 megapixel; more is a decompression bomb
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
JPEG_MAGIC = b"\xff\xd8\xff"

# Pillow modes that carry colour in a form other than RGB(A); converted by Pillow itself.
_PIL_TO_RGBA = {"P", "PA"}
_PIL_TO_RGB = {"CMYK", "YCbCr", "LAB", "HSV"}


def read_image(path: str | Path) -> np.ndarray:
    """Decode `path` into a uint8 array (H, W, 3) following the module's policy."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            fast = head.startswith(JPEG_MAGIC) and _simplejpeg() is not None
            data = head + f.read() if fast else b""
    except OSError as e:
        raise BadFileError(path, f"cannot be read ({e.strerror or e})") from None
    if not head:
        raise BadFileError(path, "empty file (0 bytes)")
    pixels = _read_jpeg_fast(path, data) if fast else None
    if pixels is None:
        pixels = _read_tiff(path) if head in TIFF_MAGIC else _read_with_pillow(path)
    return to_rgb_uint8(pixels, path)


@functools.cache
def _simplejpeg():
    """The simplejpeg module where it is installed and not switched off, else None."""
    if os.environ.get("LEUKOLEARN_SIMPLEJPEG", "1") == "0":
        return None
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def _read_jpeg_fast(path: Path, data: bytes) -> np.ndarray | None:
    """A YCbCr or gray JPEG decoded by simplejpeg; None for Pillow to read (see the module
    docstring): strict=True makes libjpeg's warnings (a truncated file) errors."""
    sj = _simplejpeg()
    try:
        height, width, colorspace, _ = sj.decode_jpeg_header(data)
    except Exception:  # a header it cannot read; Pillow says what is wrong, or reads it
        return None
    if colorspace not in ("YCbCr", "Gray"):
        return None
    _check_pixel_count(path, height * width)
    try:
        return sj.decode_jpeg(data, colorspace="RGB" if colorspace == "YCbCr" else "GRAY",
                              fastdct=False, fastupsample=False, strict=True)
    except Exception:
        return None


def count_pages(path: str | Path) -> int:
    """Pages (TIFF) or frames (animated PNG, MPO JPEG) in a file, from its headers only;
    1 when they cannot be read (`read_image` then says why). A second, cheap opening of
    the file, so that `read_image` stays the one decoder (and its one result, pixels)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head in TIFF_MAGIC:
            with tifffile.TiffFile(path) as tif:
                return max(1, len(tif.pages))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # see module docstring: decoders raise many types; counting advises
        return 1


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            if not len(tif.pages):
                raise BadFileError(path, "TIFF holds no image (damaged or empty)")
            page = tif.pages.first
            _check_pixel_count(path, int(np.prod(page.shape[:2])) if page.shape else 0)
            pixels = page.asarray()
            axes = page.axes
    except BadFileError:
        raise
    except Exception as e:  # see module docstring: any decoder failure is a bad file
        raise BadFileError(path, f"not a readable TIFF ({_describe(e)})") from None
    if axes.startswith("S") and pixels.ndim == 3:  # planar storage: samples first
        pixels = np.moveaxis(pixels, 0, -1)
    return pixels


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # We enforce our own limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixel_count(path, im.width * im.height)
                im.load()  # decode now, inside the try: open() only reads the header
                if im.mode in _PIL_TO_RGBA:
                    im = im.convert("RGBA")
                elif im.mode in _PIL_TO_RGB:
                    im = im.convert("RGB")
                elif im.mode == "1":
                    im = im.convert("L")
                elif im.mode == "I":  # 16-bit PNG on older Pillow; values fit in 16 bits
                    return _int32_as_uint16(np.asarray(im), path)
                return np.asarray(im)
    except BadFileError:
        raise
    except Image.UnidentifiedImageError:
        raise BadFileError(path, "not an image (content is not JPEG, PNG, BMP or TIFF)") from None
    except Exception as e:  # see module docstring
        raise BadFileError(path, f"not a readable image ({_describe(e)})") from None


def _check_pixel_count(path: Path, n_pixels: int) -> None:
    if n_pixels > MAX_PIXELS:
        raise BadFileError(
            path, f"image has {n_pixels:,} pixels, over the limit of {MAX_PIXELS:,} "
                  "(a decompression bomb or not a single-cell image)"
        )


def _int32_as_uint16(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise BadFileError(path, "32-bit integer pixels are not supported")
    return pixels.astype(np.uint16)


def to_rgb_uint8(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """Apply the dtype and channel policy to a decoded array; `path` names errors."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise BadFileError(path, f"unsupported image shape {pixels.shape}")
    channels = pixels.shape[2]
    if channels in (1, 2):  # gray, or gray + alpha
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    elif channels in (3, 4):  # RGB, or RGBA with alpha dropped
        pixels = pixels[:, :, :3]
    else:
        raise BadFileError(path, f"unsupported number of channels ({channels})")
    return np.ascontiguousarray(_to_uint8(pixels, path))


def _to_uint8(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    kind = pixels.dtype.kind
    if pixels.dtype == np.uint8:
        return pixels
    if kind == "b":
        return pixels.astype(np.uint8) * 255
    if kind == "u":
        top = float(np.iinfo(pixels.dtype).max)
        return np.round(pixels.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    if kind == "f":
        if not np.isfinite(pixels).all():
            raise BadFileError(path, "image contains NaN or infinite values")
        if pixels.size and (pixels.min() < 0.0 or pixels.max() > 1.0):
            raise BadFileError(path, "floating-point pixels must lie in [0, 1]")
        return np.round(pixels.astype(np.float64) * 255.0).astype(np.uint8)
    raise BadFileError(path, f"unsupported pixel type {pixels.dtype}")


# Colours of the ALL-IDB2 expert masks (Di Ruberto, Loddo, Putzu 2016), the one mask
# format leukolearn reads.
MASK_COLOURS = {MASK_BACKGROUND: (255, 255, 255), MASK_NUCLEUS: (0, 255, 255),
                MASK_CYTOPLASM: (0, 0, 255)}


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a colour mask into (H, W) uint8 region codes (MASK_*), by nearest colour.

    Nearest rather than exact colour, so a mask saved lossily or antialiased still maps.
    """
    rgb = read_image(path).astype(np.int32)
    codes = np.array(list(MASK_COLOURS), dtype=np.uint8)
    palette = np.array(list(MASK_COLOURS.values()), dtype=np.int32)  # (K, 3)
    dist = ((rgb[:, :, None, :] - palette[None, None]) ** 2).sum(-1)  # (H, W, K)
    return codes[dist.argmin(-1)]


def fit_to_square(img: np.ndarray, size: int) -> np.ndarray:
    """Edge-pad `img` (H, W, 3) uint8 to a centred square, then bicubic-resize to size:
    Pillow's resize, computed natively where it can be (`fast_resize`: the same pixels)."""
    return _fit(img, size, Image.Resampling.BICUBIC)


def fit_mask_to_square(mask: np.ndarray, size: int) -> np.ndarray:
    """Like `fit_to_square` for a (H, W) uint8 code mask, with nearest-neighbour resizing."""
    return _fit(mask, size, Image.Resampling.NEAREST)


def _fit(a: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    square = _pad_to_square(a)
    if square.shape[0] == size:
        return square
    if resample == Image.Resampling.BICUBIC:
        return resize_bicubic(square, size, size)  # Pillow for what it does not handle
    return np.asarray(Image.fromarray(square).resize((size, size), resample))


def _pad_to_square(a: np.ndarray) -> np.ndarray:
    """Centre `a` in a square, repeating its edge rows or columns (np.pad mode="edge",
    written out because np.pad is ~10x slower for these thin pads)."""
    h, w = a.shape[:2]
    if h == w:
        return np.ascontiguousarray(a)
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2  # an odd remainder goes bottom / right
    out = np.empty((side, side, *a.shape[2:]), dtype=a.dtype)
    out[top:top + h, left:left + w] = a
    out[:top, left:left + w] = a[:1]
    out[top + h:, left:left + w] = a[-1:]
    out[:, :left] = out[:, left:left + 1]
    out[:, left + w:] = out[:, left + w - 1:left + w]
    return out


def _describe(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
