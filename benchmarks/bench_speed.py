"""Training and inference speed of leukolearn against a plain PyTorch loop, in one run.

    .venv/bin/python benchmarks/bench_speed.py --quick      # about 2-3 minutes
    .venv/bin/python benchmarks/bench_speed.py              # about 10-15 minutes
    .venv/bin/python benchmarks/bench_speed.py --profile    # adds the per-stage breakdown

What it measures (257 x 257 px, batch 5, the paper's CNN, RMSprop, the paper's augmentation):
1. training, ms per image-step: (a) a plain PyTorch eager loop written below (NCHW,
   affine_grid + grid_sample augmentation, loss.item() per batch, validation each epoch)
   and (b) `leukolearn.training.loop.train_model` on synthetic cells, run in alternation
   A, B, A, B ... so both see the same machine load; the ratio is taken per round. Each is
   run with the thread counts of --threads (the issue's baseline is 2 threads).
   Wall time and CPU time (user + system of this process) are both printed: on a loaded
   machine the CPU time per image-step is the steadier of the two.
2. inference, images/s: the plain eager model vs `leukolearn.training.loop.predict_proba`.
3. sweep wall time: a small fixed sweep (ALL-sized synthetic set: 250 images, validation
   25; 2 folds x --sweep-sizes, fixed --sweep-epochs) through `leukolearn.experiments.sweep`, with
   jobs=1 and jobs=2; from it, seconds per epoch as a + b * size, and a projection of the
   paper's ALL-IDB2 sweep (10 folds x 20 sizes) from the epochs that finished jobs of a real
   run needed (--runs-db, opened read-only).
4. peak memory (maxrss of this process and of its children, i.e. the sweep workers).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leukolearn.model import kernels
from leukolearn.data.synthetic import make_binary
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.experiments.presets import SweepConfig
from leukolearn.experiments.protocol import ALL_SIZES, ProtocolOptions
from leukolearn.runstore.store import RunStore
from leukolearn.experiments.sweep import sweep_dataset
from leukolearn.training.config import TrainConfig
from leukolearn.training.loop import predict_proba, train_model

SIZE = 257
BATCH = 5
DEFAULT_DB = Path("/work/runs/all-idb2-binary/run.sqlite")


# ---- (a) the plain PyTorch loop: what someone would write from the paper ------------------
def plain_model() -> nn.Sequential:
    layers, c = [], 3
    for f in (4, 8, 8, 8, 16, 16):
        layers += [nn.Conv2d(c, f, 3), nn.ReLU(), nn.MaxPool2d(2)]
        c = f
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(),
                         nn.Linear(32, 2))


def plain_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flips p=0.5 each, rotation uniform in [-359, 359] deg, bilinear, nearest-edge fill."""
    b = x.shape[0]
    sx = 1 - 2 * (torch.rand(b, generator=g) < 0.5).float()
    sy = 1 - 2 * (torch.rand(b, generator=g) < 0.5).float()
    a = (torch.rand(b, generator=g) * 2 - 1) * math.radians(359)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = a.cos() * sx, -a.sin() * sy
    theta[:, 1, 0], theta[:, 1, 1] = a.sin() * sx, a.cos() * sy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def plain_train(images: np.ndarray, labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray,
                epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = plain_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-8)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels)
    x_val = torch.from_numpy(val).permute(0, 3, 1, 2).float() / 255
    y_val = torch.from_numpy(val_labels)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=g)
        total = 0.0
        for s in range(0, len(order), BATCH):
            idx = order[s:s + BATCH]
            x = plain_augment(x_all[idx].float() / 255, g)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model(x_val), y_val).item()


def plain_predict(model: nn.Module, images: np.ndarray, batch: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(images[s:s + batch]).permute(0, 3, 1, 2).float() / 255
            out.append(torch.softmax(model(x), 1).numpy())
    return np.concatenate(out)


# ---- measuring ---------------------------------------------------------------------------
def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of fn()."""
    c, t = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t, cpu_seconds() - c


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def bench_training(args, cells) -> dict:
    n, e = args.n_train, args.epochs
    train_idx = np.arange(n)
    val_idx = np.arange(n, n + args.n_val)
    imgs, labels = cells.images[:n], cells.labels[:n]
    val, val_labels = cells.images[val_idx], cells.labels[val_idx]
    steps = n * e
    rows: dict[str, list[tuple[float, float]]] = {}

    def ours(threads):
        # train_model runs a CPU training with training.threads.TRAINING_THREADS whatever the
        # caller set, so the "leukolearn, t thr" rows all time that one count; they stay so
        # that each plain PyTorch row keeps its ratio.
        cfg = TrainConfig.binary(max_epochs=e, patience=10 ** 6)
        return lambda: train_model(cells, train_idx, val_idx, cfg, seed=0)

    def plain(threads):
        def run():
            torch.set_num_threads(threads)
            plain_train(imgs, labels, val, val_labels, e, seed=0)
        return run

    variants = []
    for t in args.threads:
        variants += [(f"plain eager, {t} thr", plain(t)), (f"leukolearn, {t} thr", ours(t))]
    ours(args.threads[0])()  # warm-up: builds / loads the kernels, fills caches
    for r in range(args.rounds):
        for name, fn in variants:
            wall, cpu = timed(fn)
            rows.setdefault(name, []).append((wall / steps * 1e3, cpu / steps * 1e3))
        print(f"  round {r + 1}/{args.rounds} done (load {load()})", flush=True)
    print(f"\nTRAINING  ms per image-step ({n} images x {e} epochs per run, validation "
          f"{args.n_val} images per epoch; median of {args.rounds} rounds)")
    print(f"  {'variant':24s} {'wall ms':>9s} {'cpu ms':>8s}")
    out = {}
    for name, vals in rows.items():
        w = statistics.median(v[0] for v in vals)
        c = statistics.median(v[1] for v in vals)
        out[name] = {"wall_ms": w, "cpu_ms": c, "rounds": vals}
        print(f"  {name:24s} {w:9.2f} {c:8.2f}")
    base = f"plain eager, {args.threads[0]} thr"
    for t in args.threads:
        for ref in (base, f"plain eager, {t} thr"):
            mine = f"leukolearn, {t} thr"
            ratios = [a[0] / b[0] for a, b in zip(rows[ref], rows[mine])]
            cpu_ratios = [a[1] / b[1] for a, b in zip(rows[ref], rows[mine])]
            key = f"{ref} / {mine}"
            if key in out:
                continue
            out[key] = {"wall": statistics.median(ratios), "cpu": statistics.median(cpu_ratios)}
            print(f"  ratio {ref:>22s} / {mine:18s}: wall {statistics.median(ratios):5.1f}x"
                  f"  cpu {statistics.median(cpu_ratios):5.1f}x  (per round: "
                  f"{', '.join(f'{x:.1f}' for x in ratios)})")
    return out


def bench_inference(args, cells) -> dict:
    images = cells.images[:args.n_infer]
    model = build_model(ModelConfig(), seed=0).eval()
    plain = plain_model().eval()
    rows: dict[str, list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for t in args.threads:
            torch.set_num_threads(t)
            for name, fn in ((f"plain eager, {t} thr", lambda: plain_predict(plain, images, 64)),
                             (f"leukolearn, {t} thr", lambda: predict_proba(model, images, 64))):
                wall, cpu = timed(fn)
                rows.setdefault(name, []).append((len(images) / wall, len(images) / cpu))
    print(f"\nINFERENCE  images/s ({len(images)} images of 257 x 257, batch 64, median of "
          f"{args.rounds}); per CPU-second: what one idle core would do")
    print(f"  {'variant':24s} {'wall':>8s} {'per CPU-s':>10s}")
    out = {}
    for name, vals in rows.items():
        out[name] = {"per_s": statistics.median(v[0] for v in vals),
                     "per_cpu_s": statistics.median(v[1] for v in vals)}
        print(f"  {name:24s} {out[name]['per_s']:8.0f} {out[name]['per_cpu_s']:10.0f}")
    return out


def bench_sweep(args, cells) -> dict:
    options = ProtocolOptions(folds=10, sizes=tuple(args.sweep_sizes), run_folds=2,
                              cap_sizes=True)
    config = SweepConfig("all", options,
                         TrainConfig.binary(max_epochs=args.sweep_epochs, patience=10 ** 6), "auc")
    out = {}
    print(f"\nSWEEP  2 folds x sizes {args.sweep_sizes} x {args.sweep_epochs} epochs, "
          f"{len(cells)} synthetic images (validation 25 per fold)")
    for jobs in args.sweep_jobs:
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu0 = time.perf_counter(), cpu_seconds() + children_cpu_seconds()
            report = sweep_dataset(cells, config, Path(tmp) / "run", jobs=jobs, progress=False)
            wall = time.perf_counter() - start
            cpu = cpu_seconds() + children_cpu_seconds() - cpu0
            with RunStore.open(Path(tmp) / "run") as store:
                recs = [r for r in store.results() if r.status == "done"]
                per_epoch = {}
                for rec in recs:
                    hist = store.history(rec.job_id)
                    per_epoch.setdefault(rec.size, []).append(
                        statistics.median(h["seconds"] for h in hist))
                job_overhead = statistics.median(
                    rec.seconds - sum(h["seconds"] for h in store.history(rec.job_id))
                    for rec in recs)
        sizes = sorted(per_epoch)
        secs = [statistics.median(per_epoch[s]) for s in sizes]
        b, a = np.polyfit(sizes, secs, 1) if len(sizes) > 1 else (secs[0] / sizes[0], 0.0)
        busy = cpu / (jobs * wall)  # share of the workers' time they were on a CPU
        out[jobs] = {"wall_s": wall, "cpu_s": cpu, "busy": busy, "done": report.done,
                     "failed": report.failed, "epoch_s_a": float(a), "epoch_s_b": float(b),
                     "job_overhead_s": float(job_overhead), "load": load()}
        print(f"  jobs={jobs}: wall {wall:7.1f} s, CPU {cpu:7.1f} s ({report.done} done, "
              f"{report.failed} failed); seconds per epoch ~ {a:.3f} + {b * 1e3:.2f} ms x size "
              f"(per worker); workers on a CPU {busy:.0%} of the time; load {load()}")
    if 1 in out and 2 in out:
        print(f"  jobs=2 vs jobs=1: {out[1]['wall_s'] / out[2]['wall_s']:.2f}x faster")
    return out


def project_paper_sweep(args, sweep: dict) -> dict:
    """Hours for 10 folds x 20 sizes: epochs per size from a real run's finished jobs."""
    jobs = max(sweep)
    fit = sweep[jobs]
    epochs_by_size: dict[int, list[int]] = {}
    if args.runs_db and Path(args.runs_db).exists():
        uri = f"file:{Path(args.runs_db).resolve()}?mode=ro"
        with sqlite3.connect(uri, uri=True) as conn:
            for size, ep in conn.execute(
                    "SELECT size, epochs_run FROM jobs WHERE status='done' AND epochs_run > 0"):
                epochs_by_size.setdefault(int(size), []).append(int(ep))
    finished = [e for v in epochs_by_size.values() for e in v]
    fallback = statistics.median(finished) if finished else 150.0
    sizes = [min(s, 197) for s in ALL_SIZES]  # 247 images: size 200 is capped to the pool
    total = 0.0
    for size in sizes:
        eps = statistics.median(epochs_by_size[size]) if size in epochs_by_size else fallback
        total += 10 * (eps * (fit["epoch_s_a"] + fit["epoch_s_b"] * size) + fit["job_overhead_s"])
    hours = total / jobs / 3600
    worst = sum(10 * (500 * (fit["epoch_s_a"] + fit["epoch_s_b"] * s) + fit["job_overhead_s"])
                for s in sizes) / jobs / 3600
    busy = min(1.0, fit["busy"])
    print(f"\nPROJECTION  paper ALL-IDB2 sweep, 10 folds x 20 sizes, {jobs} workers:\n"
          f"  {hours:.2f} h at this run's load; {hours * busy:.2f} h with a core per worker "
          f"(scaled by the {busy:.0%} of the time the workers were on a CPU).\n"
          f"  Method: epochs per size = median epochs_run of the {len(finished)} finished jobs "
          f"in {args.runs_db or '(no run database)'} (sizes {sorted(epochs_by_size)}; other "
          f"sizes: {fallback:.0f}, the median over all); seconds per epoch = a + b x size "
          f"fitted on the jobs={jobs} sweep above, plus the measured per-job overhead.\n"
          f"  Every job at 500 epochs (no early stop): {worst:.2f} h, {worst * busy:.2f} h.")
    return {"hours": hours, "hours_core_per_worker": hours * busy,
            "hours_all_500_epochs": worst, "finished_jobs": len(finished),
            "epochs_by_size": {k: statistics.median(v) for k, v in epochs_by_size.items()},
            "fallback_epochs": fallback}


def profile_breakdown(args, cells) -> None:
    """CPU ms per batch of 5 for each stage of a training step, both paths, 1 thread."""
    torch.set_num_threads(1)
    from leukolearn.training.augment import random_affine
    from leukolearn.training.loop import to_tensor

    x_u8 = to_tensor(cells.images[:50])
    y = torch.from_numpy(cells.labels[:5])
    idx = torch.arange(5)
    model = build_model(ModelConfig(), seed=0)
    convs = list(model.features[0::3])
    g = torch.Generator().manual_seed(0)
    reps = args.profile_reps

    def cpu_ms(fn):
        fn()
        best = float("inf")
        for _ in range(3):
            c = time.thread_time()
            for _ in range(reps):
                fn()
            best = min(best, (time.thread_time() - c) / reps * 1e3)
        return best

    def plain_aug():
        return plain_augment(x_u8[idx].float() / 255, g)

    def fused_aug():
        return kernels.augment_uint8(x_u8, idx, random_affine(5, g), 256)

    rows = [("augmentation (uint8 -> float, flips, rotation)", cpu_ms(plain_aug),
             cpu_ms(fused_aug) if kernels.enabled() else float("nan"))]
    x_plain, x_fused = plain_aug().detach(), fused_aug() if kernels.enabled() else None
    for k, conv in enumerate(convs):
        w, b = conv.weight, conv.bias
        xin_p = x_plain.clone().requires_grad_(k > 0)
        out = F.max_pool2d(F.relu(F.conv2d(xin_p, w, b)), 2)
        gy = torch.randn_like(out)

        def plain_block(x=xin_p):
            F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2).backward(gy)

        def plain_fwd(x=xin_p):
            with torch.no_grad():
                F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2)
        fused_fb = fused_f = float("nan")
        if kernels.enabled():
            xin_f = (x_fused if k == 0 else x_plain).clone().requires_grad_(k > 0)

            def fused_block(x=xin_f):
                kernels.conv_pool_relu(x, w, b).backward(gy)

            def fused_fwd(x=xin_f):
                with torch.no_grad():
                    kernels.conv_pool_relu(x, w, b)
            fused_fb, fused_f = cpu_ms(fused_block), cpu_ms(fused_fwd)
        rows.append((f"block {k + 1} {tuple(x_plain.shape[1:])} fwd+bwd", cpu_ms(plain_block),
                     fused_fb))
        rows.append((f"block {k + 1} fwd only", cpu_ms(plain_fwd), fused_f))
        x_plain = out.detach()
        x_fused = x_plain
    feats = x_plain.clone().requires_grad_()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-8)

    def head():
        F.cross_entropy(model.classifier(model.hidden_act(model.hidden(model.flatten(feats)))),
                        y).backward()

    def step():
        opt.step()
        opt.zero_grad()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    rows.append(("dense layers + loss, fwd+bwd", cpu_ms(head), cpu_ms(head)))
    rows.append(("RMSprop step + zero_grad", cpu_ms(step), cpu_ms(step)))
    print("\nPROFILE  CPU ms per batch of 5 (1 thread, best of 3 x "
          f"{reps} repetitions; load {load()})")
    print(f"  {'stage':52s} {'plain':>8s} {'fused':>8s}")
    for name, a, b in rows:
        print(f"  {name:52s} {a:8.2f} {b:8.2f}")
    tot_p = sum(a for n, a, _ in rows if "fwd only" not in n)
    tot_f = sum(b for n, _, b in rows if "fwd only" not in n)
    print(f"  {'sum of a training step':52s} {tot_p:8.2f} {tot_f:8.2f}  -> per image "
          f"{tot_p / 5:.2f} vs {tot_f / 5:.2f} ms")
    if args.torch_profile:
        from torch.profiler import profile
        cfg = TrainConfig.binary(max_epochs=2, patience=10 ** 6)
        for label, ctx in (("leukolearn", None), ("leukolearn, kernels off", kernels.disabled)):
            with (ctx() if ctx else _Null()), profile() as prof:
                train_model(cells, np.arange(50), np.arange(50, 55), cfg, seed=0)
            print(f"\n  torch.profiler, train_model 50 images x 2 epochs, {label}:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: about 2-3 minutes")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (median taken)")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-val", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-infer", type=int, default=250)
    ap.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[2, 1],
                    help="thread counts to run each trainer with; the first is the baseline")
    ap.add_argument("--sweep-sizes", type=lambda s: [int(t) for t in s.split(",")],
                    default=[10, 50, 100, 150, 200])
    ap.add_argument("--sweep-epochs", type=int, default=20)
    ap.add_argument("--sweep-jobs", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2])
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--only", type=lambda s: set(s.split(",")),
                    default={"training", "inference", "sweep"},
                    help="sections to run, of training,inference,sweep (default all)")
    ap.add_argument("--runs-db", default=str(DEFAULT_DB) if DEFAULT_DB.exists() else "")
    ap.add_argument("--profile", action="store_true", help="per-stage CPU time breakdown")
    ap.add_argument("--profile-reps", type=int, default=10)
    ap.add_argument("--torch-profile", action="store_true", help="also torch.profiler tables")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.n_train, args.epochs, args.n_infer = 2, 30, 1, 128
        args.sweep_sizes, args.sweep_epochs = [10, 50], 3
        args.profile_reps = 3

    print(f"torch {torch.__version__}, {os.cpu_count()} cores, kernels "
          f"{'on' if kernels.enabled() else 'OFF'}, load average {load()} (1/5/15 min)")
    cells = make_binary(125, size=SIZE, seed=0)  # 250 images, ALL-IDB2-sized
    results: dict = {"load_start": load()}
    if args.profile:
        profile_breakdown(args, cells)
    if "training" in args.only:
        results["training"] = bench_training(args, cells)
    if "inference" in args.only:
        results["inference"] = bench_inference(args, cells)
    torch.set_num_threads(os.cpu_count() or 1)
    if not args.no_sweep and "sweep" in args.only:
        results["sweep"] = bench_sweep(args, cells)
        results["projection"] = project_paper_sweep(args, results["sweep"])
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    results["maxrss_mb"] = {"self": self_mb, "children": child_mb}
    results["load_end"] = load()
    print(f"\nMEMORY  peak RSS: this process {self_mb:.0f} MB, largest child {child_mb:.0f} MB")
    print(f"load average at start {results['load_start']}, at end {results['load_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
