"""End-to-end prediction speed: image files on disk -> cells.csv, against a plain loop, in one run.

    .venv/bin/python benchmarks/bench_predict.py --images 600 --rounds 1    # under a minute
    .venv/bin/python benchmarks/bench_predict.py                            # 2,400 images x 3

What it measures, cells/s (wall) and CPU ms per cell (user + system of this process, all
its threads), on the same files in the same run:
1. end to end, leukolearn: `leukolearn.predict_samples(model file, [folder])` then
   `PredictionReport.write(out)`: listing, parallel decoding, the network, the threshold,
   the counts and cells.csv / samples.csv / summary.json, as `leukolearn predict` does.
2. end to end, the baseline: a plain single-threaded loop someone would write: per batch
   of 64 files, Pillow decoding (`read_image` with simplejpeg switched off) and
   `fit_to_square` with Pillow's resize (not the native one), then the model's own nn.Module (`PaperCNN.forward`, PyTorch's layers,
   no fused kernels; `bench_speed.plain_predict`) at torch.set_num_threads(1), then
   cells.csv written with the csv module.
   The two alternate (baseline, leukolearn, baseline, ...) after one untimed run of each
   on 64 files; the ratio is taken per round and the median printed.
3. network only: the same images decoded beforehand (uint8, 257 px), through
   `training.loop.predict_proba` at 1 thread and at every CPU, and through the plain
   forward at 1 thread.
4. CPU ms per cell of each stage on one thread (best of 3): the decoders, the fit to 257 px,
   the network.

Data: the PBC JPEGs (360 x 363) under ../shared/data/pbc-subset when present, else
synthetic cells written as 360 x 363 JPEGs (quality 90); copied into a temporary folder
(one sample per class folder), repeated under new names when --images asks for more. The
model: a freshly initialised PaperCNN (input 257, 2 classes) saved as a model file: the
speed does not depend on the weights.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import cpu_seconds, load, plain_predict  # noqa: E402

from leukolearn.data import decode  # noqa: E402
from leukolearn.data.decode import fit_to_square, read_image  # noqa: E402
from leukolearn.data.parallel_decode import available_cpus  # noqa: E402
from leukolearn.model import kernels  # noqa: E402
from leukolearn.model.cnn import ModelConfig, build_model  # noqa: E402
from leukolearn.model.weights import save_model  # noqa: E402
from leukolearn.predict.predictor import PredictOptions, predict_samples  # noqa: E402
from leukolearn.training.loop import predict_proba  # noqa: E402

SIZE = 257
BATCH = 64
PBC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pbc-subset"


# ---- data and model ----------------------------------------------------------------------
def make_files(root: Path, n: int, data: Path | None) -> tuple[list[Path], str]:
    """n image files under root/<class>/, and where they came from."""
    if data is not None and data.is_dir():
        sources = sorted(data.glob("*/*.jpg"))
        # interleave the classes, so a prefix holds every class
        by_class: dict[str, list[Path]] = {}
        for p in sources:
            by_class.setdefault(p.parent.name, []).append(p)
        sources = [p for group in zip(*by_class.values()) for p in group]
        what = f"PBC JPEGs from {data}"
    else:
        sources = synthetic_jpegs(root / ".synthetic", min(n, 240))
        what = "synthetic 360 x 363 JPEGs (quality 90)"
    files = []
    for k in range(n):
        src = sources[k % len(sources)]
        dst = root / "cells" / src.parent.name / f"{src.stem}_{k // len(sources)}{src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        files.append(dst)
    return files, what


def synthetic_jpegs(root: Path, n: int) -> list[Path]:
    from PIL import Image

    from leukolearn.data.synthetic import make_cells

    cells = make_cells(-(-n // 6), size=363, seed=0)
    out = []
    for img, label, image_id in zip(cells.images, cells.labels, cells.image_ids):
        path = root / cells.class_names[label] / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img[:, :360])).save(path, quality=90)
        out.append(path)
    return out[:n]


# ---- the two end-to-end paths --------------------------------------------------------------
def run_leukolearn(model_file: Path, folder: Path, out: Path) -> np.ndarray:
    report = predict_samples(model_file, [folder], PredictOptions(batch_size=BATCH),
                             progress=False)
    report.write(out)
    return report.probs


class pillow_only:
    """Inside the block, Pillow alone decodes and resizes: `read_image` without the
    simplejpeg fast path and `fit_to_square` with Pillow's own resize, not the native one
    (the same pixels, so the baseline computes what leukolearn computes, the plain way)."""

    def __enter__(self):
        from leukolearn.data import fast_resize

        self.before = os.environ.get("LEUKOLEARN_SIMPLEJPEG")
        os.environ["LEUKOLEARN_SIMPLEJPEG"] = "0"
        decode._simplejpeg.cache_clear()
        self.resize = decode.resize_bicubic
        decode.resize_bicubic = fast_resize.pillow_resize

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop("LEUKOLEARN_SIMPLEJPEG", None)
        else:
            os.environ["LEUKOLEARN_SIMPLEJPEG"] = self.before
        decode._simplejpeg.cache_clear()
        decode.resize_bicubic = self.resize


def run_baseline(model, files: list[Path], out: Path) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pillow_only():
            probs = []
            for s in range(0, len(files), BATCH):
                batch = np.stack([fit_to_square(read_image(p), SIZE) for p in files[s:s + BATCH]])
                probs.append(plain_predict(model, batch, BATCH))
        probs = np.concatenate(probs)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "cells.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "p_other", "p_blast", "predicted"])
            for p, row in zip(files, probs):
                w.writerow([str(p), f"{row[0]:.6f}", f"{row[1]:.6f}", int(row[1] >= 0.5)])
        return probs
    finally:
        torch.set_num_threads(before)


def timed(fn) -> tuple[float, float, object]:
    c, t = cpu_seconds(), time.perf_counter()
    result = fn()
    return time.perf_counter() - t, cpu_seconds() - c, result


# ---- parts -------------------------------------------------------------------------------
def network_only(model, images: np.ndarray, rounds: int) -> dict[str, tuple[float, float]]:
    before = torch.get_num_threads()
    cores = available_cpus()
    variants = [("leukolearn predict_proba, 1 thread", 1, lambda: predict_proba(model, images, BATCH)),
                (f"leukolearn predict_proba, {cores} threads", cores,
                 lambda: predict_proba(model, images, BATCH)),
                ("plain forward, 1 thread", 1, lambda: plain_predict(model, images, BATCH))]
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        for _ in range(max(rounds, 1)):
            for name, threads, fn in variants:
                torch.set_num_threads(threads)
                wall, cpu, _ = timed(fn)
                rows.setdefault(name, []).append((len(images) / wall, cpu / len(images) * 1e3))
    finally:
        torch.set_num_threads(before)
    return {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
            for k, vals in rows.items()}


def stage_costs(model, files: list[Path], images: np.ndarray) -> list[tuple[str, float]]:
    """CPU ms per cell of each stage, one thread, best of 3."""
    files = files[:200]
    decoded = [read_image(p) for p in files]

    def best(fn, n):
        times = []
        for _ in range(3):
            c = cpu_seconds()
            fn()
            times.append((cpu_seconds() - c) / n * 1e3)
        return min(times)

    rows = []
    with pillow_only():
        rows.append(("read_image, Pillow", best(lambda: [read_image(p) for p in files], len(files))))
    if decode._simplejpeg() is not None:
        rows.append(("read_image, simplejpeg", best(lambda: [read_image(p) for p in files],
                                                    len(files))))
    rows.append(("fit_to_square to 257 px (pad + bicubic)",
                 best(lambda: [fit_to_square(a, SIZE) for a in decoded], len(decoded))))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sub = images[:256]
        rows.append(("network, fused kernels, 1 thread",
                     best(lambda: predict_proba(model, sub, BATCH), len(sub))))
    finally:
        torch.set_num_threads(before)
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {available_cpus()} CPUs for this process ({os.cpu_count()} in all), "
            f"torch {torch.__version__}, kernels {'on' if kernels.enabled() else 'OFF'}, "
            f"simplejpeg {'on' if decode._simplejpeg() is not None else 'not installed / off'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2400, help="image files (default 2,400)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    ap.add_argument("--data", type=Path, default=PBC, help="class folders of JPEGs "
                    "(default ../shared/data/pbc-subset; synthetic where it is missing)")
    ap.add_argument("--no-parts", action="store_true", help="end to end only")
    args = ap.parse_args(argv)

    print(machine())
    print(f"load average at start {load()} (1/5/15 min)")
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        files, what = make_files(tmp, args.images, args.data)
        model = build_model(ModelConfig(input_size=SIZE), seed=0).eval()
        model_file = save_model(model, tmp / "model.safetensors")
        print(f"{len(files)} {what}; batch {BATCH}; model input {SIZE} px")
        # One untimed run of each path on 64 files: imports, the kernels' threads, the
        # page cache; what is timed is then the steady throughput.
        warm = tmp / "warm"
        for p in files[:BATCH]:
            (warm / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, warm / p.parent.name / p.name)
        run_baseline(model, files[:BATCH], tmp / "warm_b")
        run_leukolearn(model_file, warm, tmp / "warm_l")
        results: dict[str, list[tuple[float, float]]] = {"baseline": [], "leukolearn": []}
        ratios = []
        for r in range(args.rounds):
            wall_b, cpu_b, probs_b = timed(lambda: run_baseline(model, files, tmp / "out_b"))
            wall_l, cpu_l, probs_l = timed(lambda: run_leukolearn(model_file, tmp / "cells",
                                                                  tmp / "out_l"))
            results["baseline"].append((len(files) / wall_b, cpu_b / len(files) * 1e3))
            results["leukolearn"].append((len(files) / wall_l, cpu_l / len(files) * 1e3))
            ratios.append(wall_b / wall_l)
            print(f"  round {r + 1}: baseline {len(files) / wall_b:6.0f} cells/s, leukolearn "
                  f"{len(files) / wall_l:6.0f} cells/s, ratio {ratios[-1]:.2f}x "
                  f"(load {load()})")
        # Same files, same order (collect_samples sorts; so does make_files per folder).
        order = sorted(range(len(files)), key=lambda i: files[i])
        diff = float(np.abs(probs_b[order] - probs_l).max())
        print(f"\nEND TO END, files -> cells.csv ({len(files)} cells, median of {args.rounds})")
        print(f"  {'variant':44s} {'cells/s':>8s} {'CPU ms/cell':>12s}")
        for name, label in (("baseline", "plain loop (Pillow, PyTorch layers, 1 thread)"),
                            ("leukolearn", "leukolearn predict_samples + write")):
            cells_s = statistics.median(v[0] for v in results[name])
            cpu_ms = statistics.median(v[1] for v in results[name])
            print(f"  {label:44s} {cells_s:8.0f} {cpu_ms:12.2f}")
        print(f"  ratio (wall, per round {', '.join(f'{x:.2f}' for x in ratios)}): "
              f"median {statistics.median(ratios):.2f}x; probabilities agree to {diff:.1e}")
        if not args.no_parts:
            images = np.stack([fit_to_square(read_image(p), SIZE) for p in files])
            print(f"\nNETWORK ONLY, pre-decoded uint8 {SIZE} px ({len(images)} images, batch "
                  f"{BATCH}, median of {args.rounds})")
            print(f"  {'variant':44s} {'cells/s':>8s} {'CPU ms/cell':>12s}")
            for name, (cells_s, cpu_ms) in network_only(model, images, args.rounds).items():
                print(f"  {name:44s} {cells_s:8.0f} {cpu_ms:12.2f}")
            print("\nCPU ms per cell, one thread, best of 3")
            for name, ms in stage_costs(model, files, images):
                print(f"  {name:44s} {ms:8.3f}")
    print(f"\nload average at end {load()} (1/5/15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
