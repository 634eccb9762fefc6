"""Decoding policy: every supported format to uint8 RGB, every failure to BadFileError."""
import numpy as np
import pytest
import tifffile
from PIL import Image

from leukolearn.data.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS
from leukolearn.data import decode
from leukolearn.data.decode import fit_mask_to_square, fit_to_square, read_image, read_mask
from leukolearn.errors import BadFileError


def test_rgba_tiff_drops_alpha(tmp_path, cell_image):
    rgb = cell_image(0, 400, 400)
    rgba = np.dstack([rgb, np.full((400, 400), 255, np.uint8)])
    tifffile.imwrite(tmp_path / "cell.tiff", rgba)
    out = read_image(tmp_path / "cell.tiff")
    assert out.dtype == np.uint8 and out.shape == (400, 400, 3)
    np.testing.assert_array_equal(out, rgb)


def test_16bit_tiff_scaled_by_dtype_range(tmp_path):
    values = np.array([[0, 257, 257 * 128], [65535, 257 * 255, 257 * 7]], np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", np.dstack([values] * 3))
    out = read_image(tmp_path / "deep.tif")
    np.testing.assert_array_equal(out[:, :, 1], [[0, 1, 128], [255, 255, 7]])


def test_planar_tiff_moves_samples_last(tmp_path, cell_image):
    rgb = cell_image(1, 30, 40)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), planarconfig="separate",
                     photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), rgb)


def test_float_tiff_in_unit_range(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.0, 0.5, 1.0]], np.float32))
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize("value, problem", [(np.nan, "NaN"), (np.inf, "NaN"), (1.5, "[0, 1]")])
def test_bad_float_pixels_rejected(tmp_path, value, problem):
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.2, value]], np.float32))
    with pytest.raises(BadFileError, match="f.tif") as err:
        read_image(tmp_path / "f.tif")
    assert problem in err.value.problem


def test_grayscale_png_becomes_three_equal_channels(tmp_path, cell_image):
    gray = cell_image(2)[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (80, 80, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_16bit_gray_png(tmp_path):
    Image.fromarray(np.array([[0, 65535, 257 * 9]], np.uint16)).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[0, :, 2], [0, 255, 9])


def test_gray_alpha_becomes_gray(tmp_path):
    la = np.zeros((4, 5, 2), np.uint8)
    la[:, :, 0], la[:, :, 1] = 77, 3
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png") == 77).all()


def test_palette_png_and_bmp(tmp_path, cell_image):
    rgb = cell_image(3)
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "c.bmp"), rgb)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (80, 80, 3) and np.abs(out.astype(int) - rgb).mean() < 20


def test_jpeg_is_read(tmp_path, cell_image):
    rgb = cell_image(4, 60, 90)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (60, 90, 3) and np.abs(out.astype(int) - rgb).mean() < 8


def _write_bad(tmp_path, name: str, cell_image) -> None:
    path = tmp_path / name
    if name == "empty.png":
        path.write_bytes(b"")
    elif name == "text.png":
        path.write_text("this is not an image\n")
    elif name == "truncated.jpg":
        Image.fromarray(cell_image(5)).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:400])
    elif name == "corrupt.jpg":
        Image.fromarray(cell_image(6)).save(path, quality=90)
        data = bytearray(path.read_bytes())
        data[200:] = b"\x00" * (len(data) - 200)
        path.write_bytes(bytes(data))
    elif name == "corrupt.tif":
        path.write_bytes(b"II*\x00" + b"\xff" * 50)
    elif name == "five.tif":
        tifffile.imwrite(path, np.zeros((8, 8, 5), np.uint8), planarconfig="contig")


@pytest.mark.parametrize("name", ["empty.png", "text.png", "truncated.jpg", "corrupt.jpg",
                                  "corrupt.tif", "five.tif"])
def test_bad_files_raise_bad_file_error_naming_the_file(tmp_path, name, cell_image):
    _write_bad(tmp_path, name, cell_image)
    with pytest.raises(BadFileError) as err:
        read_image(tmp_path / name)
    assert name in str(err.value) and err.value.path == tmp_path / name


def test_count_pages_and_first_page_decoded(tmp_path, cell_image):
    frames = [cell_image(20, 30, 30), cell_image(21, 30, 30), cell_image(22, 30, 30)]
    tifffile.imwrite(tmp_path / "stack.tif", np.stack(frames))  # 3 pages
    Image.fromarray(frames[0]).save(tmp_path / "anim.png", save_all=True,
                                    append_images=[Image.fromarray(frames[1])])  # APNG
    Image.fromarray(frames[0]).save(tmp_path / "one.jpg")
    counts = {n: decode.count_pages(tmp_path / n) for n in ("stack.tif", "anim.png", "one.jpg")}
    assert counts == {"stack.tif": 3, "anim.png": 2, "one.jpg": 1}
    for name in ("stack.tif", "anim.png"):  # page 0, the first, is the one decoded
        np.testing.assert_array_equal(read_image(tmp_path / name), frames[0])


@pytest.mark.parametrize("name", ["empty.png", "text.png", "corrupt.tif"])
def test_count_pages_of_a_bad_file_is_one(tmp_path, name, cell_image):
    _write_bad(tmp_path, name, cell_image)  # read_image says what is wrong, not the count
    assert decode.count_pages(tmp_path / name) == 1


def test_missing_file(tmp_path):
    with pytest.raises(BadFileError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_decompression_bomb_refused(tmp_path, monkeypatch, suffix):
    # A real 100-megapixel file would make the test slow; lower the limit instead.
    path = tmp_path / f"big{suffix}"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    monkeypatch.setattr(decode, "MAX_PIXELS", 1000)
    with pytest.raises(BadFileError, match="1,600 pixels"):
        read_image(path)


def test_fit_to_square_pads_with_edges_centred():
    img = np.zeros((6, 10, 3), np.uint8)
    img[0], img[-1] = 50, 200  # top and bottom rows
    out = fit_to_square(img, 10)
    assert out.shape == (10, 10, 3)
    assert (out[:2] == 50).all() and (out[-2:] == 200).all()  # two rows added on each side
    np.testing.assert_array_equal(out[2:8], img)


@pytest.mark.parametrize("h, w", [(5, 9), (9, 5), (6, 10), (10, 3), (1, 4), (7, 7)])
def test_padding_matches_numpy_edge_pad(h, w):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    expected = np.pad(img, [(top, side - h - top), (left, side - w - left), (0, 0)], mode="edge")
    np.testing.assert_array_equal(fit_to_square(img, side), expected)
    np.testing.assert_array_equal(fit_mask_to_square(img[:, :, 0], side), expected[:, :, 0])


def test_fit_to_square_resizes_both_ways(cell_image):
    img = cell_image(7, 103, 79)
    up, down = fit_to_square(img, 257), fit_to_square(img, 64)
    assert up.shape == (257, 257, 3) and up.dtype == np.uint8
    assert down.shape == (64, 64, 3) and down.dtype == np.uint8
    # bicubic keeps the overall colour
    assert np.abs(up.mean((0, 1)) - down.mean((0, 1))).max() < 3


def test_fit_mask_keeps_codes_and_alignment():
    mask = np.zeros((30, 20), np.uint8)
    mask[10:20, 5:15] = MASK_NUCLEUS
    mask[8:10, 5:15] = MASK_CYTOPLASM
    out = fit_mask_to_square(mask, 90)
    assert out.shape == (90, 90) and set(np.unique(out)) == {0, 1, 2}
    # the square is 30 x 30 with 5 columns added left: the nucleus starts at column 10 -> 30
    assert out[45, 29] == MASK_BACKGROUND and out[45, 31] == MASK_NUCLEUS


def test_read_mask_nearest_colour(tmp_path):
    rgb = np.array([[[255, 255, 255], [0, 255, 255], [0, 0, 255], [10, 240, 250], [20, 5, 230]]],
                   np.uint8)
    tifffile.imwrite(tmp_path / "m.tif", rgb)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif")[0], [
        MASK_BACKGROUND, MASK_NUCLEUS, MASK_CYTOPLASM, MASK_NUCLEUS, MASK_CYTOPLASM])
