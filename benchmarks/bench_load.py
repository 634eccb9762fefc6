"""Loading an AML-Cytomorphology_LMU-sized dataset: first load, second load, peak memory.

    .venv/bin/python benchmarks/bench_load.py --n 1000     # ~0.7 GB on disk, a minute
    .venv/bin/python benchmarks/bench_load.py              # 18,365 images, ~12 GB + 8.8 GB cache

Writes --n synthetic 400 x 400 RGBA TIFFs (uncompressed, as the real dataset) into 15
AML class folders under --dir (kept for the next run unless --clean), then runs
`load_dataset("aml-lmu", ..., positive=AML_BLASTS)` twice, each in a fresh Python process
with its own cache folder under --dir: the first decodes and fills the cache, the second
should hit it. For each load it prints the wall time, the process's peak RSS (maxrss,
which counts the pages of memory-mapped files it touched) and its peak anonymous memory
(RssAnon sampled every 50 ms: the memory the dataset would take if it were not mapped).
Checks free disk space first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

AML_CLASSES = ("BAS", "EBO", "EOS", "KSC", "LYA", "LYT", "MMZ", "MOB", "MON", "MYB", "MYO",
               "NGB", "NGS", "PMB", "PMO")
SIDE = 400
TIFF_BYTES = SIDE * SIDE * 4 + 400  # pixels + header
CACHE_BYTES = SIDE * SIDE * 3 + 300  # one decoded row of the cache

# Runs in the child process: one load, timed, with its memory watched.
CHILD = r"""
import json, os, resource, sys, threading, time
peak = {"anon": 0}
def watch():
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    peak["anon"] = max(peak["anon"], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
import numpy as np
from leukolearn.data.classes import AML_BLASTS
from leukolearn.data.dataset import load_dataset
t = time.perf_counter()
cells = load_dataset("aml-lmu", sys.argv[1], positive=AML_BLASTS, progress=False)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "n": len(cells), "memmap": isinstance(cells.images, np.memmap),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": peak["anon"] / 1024, "classes": cells.class_counts()}))
"""


def generate(root: Path, n: int, seed: int = 0) -> None:
    """n distinct-looking 400 x 400 RGBA TIFFs, round-robin over the 15 class folders."""
    import tifffile

    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(n):
        print(f"reusing {n} images in {root}")
        return
    shutil.rmtree(root, ignore_errors=True)
    for c in AML_CLASSES:
        (root / c).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    t = time.perf_counter()
    for i in range(n):
        # a coarse random pattern (distinct perceptual hashes) with a disc, as a "cell"
        img = np.repeat(np.repeat(rng.integers(120, 240, (10, 10, 4), dtype=np.uint8), 40, 0),
                        40, 1)
        cy, cx, r = rng.uniform(120, 280, 2).tolist() + [rng.uniform(40, 110)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r, :3] = rng.integers(40, 200, 3, dtype=np.uint8)
        img[..., 3] = 255
        cls = AML_CLASSES[i % len(AML_CLASSES)]
        tifffile.imwrite(root / cls / f"{cls}_{i:05d}.tiff", img, photometric="rgb",
                         extrasamples=["unassalpha"])
        if (i + 1) % 2000 == 0:
            print(f"  wrote {i + 1}/{n} ({time.perf_counter() - t:.0f} s)", flush=True)
    marker.write_text(str(n))
    print(f"wrote {n} images in {time.perf_counter() - t:.0f} s")


def load_once(root: Path, cache: Path) -> dict:
    env = dict(os.environ, LEUKOLEARN_CACHE=str(cache))
    run = subprocess.run([sys.executable, "-c", CHILD, str(root)],
                         env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"load failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=18365, help="images (the real dataset: 18,365)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/leukolearn-bench-aml"))
    ap.add_argument("--loads", type=int, default=2, help="loads after generating (1st fills)")
    ap.add_argument("--clean", action="store_true", help="delete images and cache afterwards")
    ap.add_argument("--keep-cache", action="store_true",
                    help="start from the cache a previous run left (no first load)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)

    root, cache = args.dir / "images", args.dir / "cache"
    need = args.n * (TIFF_BYTES + CACHE_BYTES)
    args.dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.dir).free
    have = sum(f.stat().st_size for f in root.rglob("*.tiff")) if root.exists() else 0
    have += sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) if cache.exists() else 0
    print(f"{args.n} images need about {need / 1e9:.1f} GB (TIFFs + cache); {free / 1e9:.1f} GB "
          f"free in {args.dir}, {have / 1e9:.1f} GB already there; load average "
          f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    if free + have < need * 1.1:
        raise SystemExit("not enough disk space: use --n to shrink or --dir elsewhere")
    generate(root, args.n)
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)  # the first load starts cold: no cache, no memo
    results = []
    for k, label in enumerate(["load"] * args.loads):
        r = load_once(root, cache)
        r["label"] = label
        results.append(r)
        print(f"{label} {k + 1}: {r['seconds']:7.1f} s, {r['n']} images, memory-mapped "
              f"{r['memmap']}, peak RSS {r['maxrss_mb']:.0f} MB (incl. mapped file pages), peak "
              f"anonymous {r['peak_anon_mb']:.0f} MB; load average "
              f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "loads": results}, indent=2))
    if args.clean:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
