"""The parallel decoder (`data.parallel_decode`), its use in predict, and the simplejpeg
fast path of `read_image` (bit-identical pixels to Pillow, or not used)."""
import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from leukolearn.data import decode
from leukolearn.data.decode import fit_to_square, read_image
from leukolearn.data.parallel_decode import (available_cpus, default_workers, fit_file,
                                             fitted_images, ordered_map)
from leukolearn.errors import BadFileError
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.predict.batches import predict_paths
from leukolearn.training.loop import predict_proba

SIZE = 190  # the smallest input the six conv/pool blocks take


def decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("leukolearn-decode")]


# ---- ordered_map -------------------------------------------------------------------------
def test_results_come_in_input_order_whatever_finishes_first():
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.004, 60)

    def slow_square(i):
        time.sleep(delays[i])
        return i * i

    assert list(ordered_map(slow_square, range(60), workers=4, in_flight=8)) == \
        [i * i for i in range(60)]
    assert list(ordered_map(slow_square, iter(range(60)), workers=1)) == \
        [i * i for i in range(60)]


def test_at_most_in_flight_results_exist_ahead_of_the_consumer():
    lock = threading.Lock()
    live, peak, running, peak_running = [0], [0], [0], [0]

    def decode_one(i):
        with lock:
            live[0] += 1
            running[0] += 1
            peak[0] = max(peak[0], live[0])
            peak_running[0] = max(peak_running[0], running[0])
        time.sleep(0.001)
        with lock:
            running[0] -= 1
        return np.full(4, i)

    got = []
    for arr in ordered_map(decode_one, range(200), workers=3, in_flight=5):
        got.append(int(arr[0]))
        time.sleep(0.0005)  # a slow consumer: the pool must wait for it, not run ahead
        with lock:
            live[0] -= 1
    assert got == list(range(200))
    assert peak[0] <= 5
    assert 1 < peak_running[0] <= 3  # it did run in parallel, on no more than its workers


def test_an_error_is_raised_in_place_and_the_rest_is_cancelled():
    calls = []

    def fn(i):
        calls.append(i)
        if i == 7:
            raise ValueError("item 7")
        return i

    got = []
    with pytest.raises(ValueError, match="item 7"):
        for x in ordered_map(fn, range(10_000), workers=2, in_flight=4):
            got.append(x)
    assert got == list(range(7))
    assert len(calls) < 20  # the items behind it were never started
    assert not decode_threads()


def test_closing_early_stops_the_workers():
    calls = []
    results = ordered_map(lambda i: calls.append(i) or i, range(10_000), workers=2, in_flight=6)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    results.close()
    n = len(calls)
    time.sleep(0.02)
    assert len(calls) == n <= 3 + 6 + 1
    assert not decode_threads()


def test_workers_are_the_cpus_this_process_may_use():
    assert 1 <= default_workers() == min(32, available_cpus())
    if hasattr(__import__("os"), "sched_getaffinity"):
        import os
        assert available_cpus() == len(os.sched_getaffinity(0))


# ---- fitted images and predict ------------------------------------------------------------
@pytest.fixture
def image_files(tmp_path, cell_image):
    """12 files of mixed formats and shapes, the 6th and 10th unreadable."""
    paths = []
    for k in range(12):
        path = tmp_path / f"c{k:02d}.{('png', 'jpg', 'bmp')[k % 3]}"
        if k in (5, 9):
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        else:
            Image.fromarray(cell_image(k, 70 + k, 90 - k)).save(path)
        paths.append(path)
    return paths


def test_fitted_images_are_the_serial_decode_in_order(image_files):
    got = list(fitted_images(image_files, SIZE, workers=3, in_flight=4))
    for path, result in zip(image_files, got):
        if path.name in ("c05.bmp", "c09.png"):
            assert isinstance(result, BadFileError) and result.path == path
        else:
            np.testing.assert_array_equal(result, fit_to_square(read_image(path), SIZE))
    assert len(got) == len(image_files)
    assert isinstance(fit_file(image_files[5], SIZE), BadFileError)


def serial_predict(models, paths, batch_size):
    """predict_paths as it was before the parallel decoder: decode, then the network."""
    out = np.full((len(paths), models[0].config.n_classes), np.nan, dtype=np.float32)
    for start in range(0, len(paths), batch_size):
        images, rows = [], []
        for i, p in enumerate(paths[start:start + batch_size]):
            try:
                images.append(fit_to_square(read_image(p), SIZE))
                rows.append(start + i)
            except BadFileError:
                pass
        if images:
            out[rows] = np.mean([predict_proba(m, np.stack(images), batch_size=batch_size)
                                 for m in models], axis=0)
    return out


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_predict_gives_the_serial_probabilities_exactly(image_files, batch_size):
    models = [build_model(ModelConfig(input_size=SIZE), seed=s).eval() for s in (0, 1)]
    before = torch.get_num_threads()
    got = predict_paths(models, image_files, batch_size, progress=False, skip_bad=True)
    assert torch.get_num_threads() == before  # the network's thread count is put back
    want = serial_predict(models, image_files, batch_size)
    np.testing.assert_array_equal(got, want)  # NaN rows (the bad files) included
    assert np.isnan(got[[5, 9]]).all() and not np.isnan(np.delete(got, [5, 9], 0)).any()


def test_predict_raises_the_first_bad_file_in_order(image_files):
    model = build_model(ModelConfig(input_size=SIZE), seed=0)
    with pytest.raises(BadFileError) as info:
        predict_paths(model, image_files, 4, progress=False)
    assert info.value.path == image_files[5]
    assert not decode_threads()


# ---- the simplejpeg fast path ------------------------------------------------------------
def pillow_pixels(path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(decode, "_simplejpeg", lambda: None)
        return read_image(path)


@pytest.fixture
def fast_path():
    pytest.importorskip("simplejpeg")
    decode._simplejpeg.cache_clear()
    if decode._simplejpeg() is None:
        pytest.skip("simplejpeg switched off (LEUKOLEARN_SIMPLEJPEG=0)")
    yield
    decode._simplejpeg.cache_clear()


def check_pbc_jpegs(shared_data, monkeypatch, step):
    files = sorted((shared_data / "pbc-subset").glob("*/*.jpg"))[::step]
    if not files:
        pytest.skip("no PBC JPEGs in shared data")
    for path in files:
        fast = decode._read_jpeg_fast(path, path.read_bytes())
        assert fast is not None, path  # the fast path did decode it
        np.testing.assert_array_equal(decode.to_rgb_uint8(fast, path),
                                      pillow_pixels(path, monkeypatch), err_msg=str(path))


def test_simplejpeg_gives_pillows_pixels_on_pbc_jpegs(fast_path, shared_data, monkeypatch):
    check_pbc_jpegs(shared_data, monkeypatch, step=30)  # 80 of the 2,400


@pytest.mark.realdata
def test_simplejpeg_gives_pillows_pixels_on_every_pbc_jpeg(fast_path, shared_data, monkeypatch):
    check_pbc_jpegs(shared_data, monkeypatch, step=1)  # about 6 s


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("progressive", [False, True])
def test_simplejpeg_matches_pillow_on_each_kind_of_jpeg(fast_path, tmp_path, cell_image,
                                                        monkeypatch, mode, subsampling,
                                                        progressive):
    path = tmp_path / "c.jpg"
    Image.fromarray(cell_image(3, 61, 97)).convert(mode).save(
        path, quality=85, subsampling=subsampling, progressive=progressive)
    used = decode._read_jpeg_fast(path, path.read_bytes()) is not None
    assert used == (mode != "CMYK")  # CMYK is Pillow's, with its own conversion
    np.testing.assert_array_equal(read_image(path), pillow_pixels(path, monkeypatch))


def test_a_damaged_jpeg_gets_pillows_error(fast_path, tmp_path, cell_image, monkeypatch):
    buf = io.BytesIO()
    Image.fromarray(cell_image(4, 120, 120)).save(buf, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    assert decode._read_jpeg_fast(path, path.read_bytes()) is None
    with pytest.raises(BadFileError) as fast:
        read_image(path)
    with pytest.raises(BadFileError) as slow:
        pillow_pixels(path, monkeypatch)
    assert fast.value.problem == slow.value.problem


def test_damaged_jpegs_read_as_pillow_reads_them(fast_path, tmp_path, cell_image, monkeypatch):
    """Bytes changed, cut or inserted: the same pixels or the same error either way."""
    buf = io.BytesIO()
    Image.fromarray(cell_image(5, 90, 96)).save(buf, "JPEG", quality=90)
    original, rng, path = buf.getvalue(), np.random.default_rng(0), tmp_path / "m.jpg"

    def outcome(pillow):
        try:
            return pillow_pixels(path, monkeypatch) if pillow else read_image(path)
        except BadFileError as e:
            return e.problem

    for _ in range(150):
        data = bytearray(original)
        kind = rng.integers(3)
        if kind == 0:
            for _ in range(rng.integers(1, 5)):
                data[rng.integers(len(data))] = rng.integers(256)
        elif kind == 1:
            data = data[:rng.integers(3, len(data))]
        else:
            at = rng.integers(len(data))
            data[at:at] = rng.integers(0, 256, rng.integers(1, 50)).astype(np.uint8).tobytes()
        path.write_bytes(bytes(data))
        fast, slow = outcome(False), outcome(True)
        assert type(fast) is type(slow)
        if isinstance(fast, str):
            assert fast == slow
        else:
            np.testing.assert_array_equal(fast, slow)


def test_the_fast_path_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("LEUKOLEARN_SIMPLEJPEG", "0")
    decode._simplejpeg.cache_clear()
    try:
        assert decode._simplejpeg() is None
    finally:
        monkeypatch.delenv("LEUKOLEARN_SIMPLEJPEG")
        decode._simplejpeg.cache_clear()
