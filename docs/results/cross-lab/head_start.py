"""The head-start sweep against training from scratch, job by job in the same folds.

    python docs/results/cross-lab/head_start.py SCRATCH_RUN HEAD_START_RUN OUT_DIR

Pairs the jobs both runs finished (same fold, size and seed: the same training and test
images), writes head_start.csv (per size: both arms' mean, s.d., median, min over the
paired folds, dead networks, and in how many folds the head start scored higher) and
head_start_vs_size.png/svg (both arms, median and spread per size).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from leukolearn.report.analysis_figures import methods_figure
from leukolearn.report.style import save_figure
from leukolearn.runstore.store import RunStore


def jobs(run: str) -> dict:
    with RunStore.open(run) as store:
        return {r.job_id: r for r in store.results()}


def main(scratch_run: str, head_run: str, out: str) -> None:
    scratch, head = jobs(scratch_run), jobs(head_run)
    paired = sorted(set(scratch) & set(head), key=lambda j: (head[j].size, head[j].fold))
    rows = []
    for size in sorted({head[j].size for j in paired}):
        ids = [j for j in paired if head[j].size == size]
        a = np.array([scratch[j].metric for j in ids])
        b = np.array([head[j].metric for j in ids])
        rows.append({"size": size, "folds": len(ids),
                     "scratch_mean": a.mean(), "scratch_sd": a.std(ddof=1), "scratch_median": np.median(a),
                     "scratch_min": a.min(), "scratch_dead": sum(scratch[j].degenerate for j in ids),
                     "head_start_mean": b.mean(), "head_start_sd": b.std(ddof=1),
                     "head_start_median": np.median(b), "head_start_min": b.min(),
                     "head_start_dead": sum(head[j].degenerate for j in ids),
                     "head_start_higher": int((b > a).sum()), "equal": int((b == a).sum())})
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "head_start.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    series = {"from scratch (paper-all-binary)": ([scratch[j].size for j in paired],
                                                  [scratch[j].metric for j in paired]),
              "head start (PBC 8-class model)": ([head[j].size for j in paired],
                                                 [head[j].metric for j in paired])}
    save_figure(methods_figure(series, metric_name="Test ROC-AUC", chance_level=0.5,
                               title="ALL-IDB2, the same folds"), out, "head_start_vs_size")
    for r in rows:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
