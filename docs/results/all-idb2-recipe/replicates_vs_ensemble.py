"""Per fold: replicate 0 of a run (with the paper's settings, the paper preset's network)
against the mean of all its replicates (the ensemble `--ensemble` scores), in the run's
metric (ROC-AUC, or weighted F1 for a multiclass run), the paired difference and its test.
Written for the 197-image arm (README, "197 images"); SIZE picks one training size of a run
that has several.

    python docs/results/all-idb2-recipe/replicates_vs_ensemble.py RUN OUT.csv [SIZE]
"""
from __future__ import annotations

import csv
import sys

import numpy as np
from scipy import stats

from leukolearn.analysis.metrics import score
from leukolearn.runstore.store import RunStore


def main(run: str, out: str, size: str | None = None) -> None:
    rows = []
    with RunStore.open(run) as store:
        metric = store.config_dict.get("metric", "auc")
        results = [r for r in store.results() if size is None or r.size == int(size)]
        if len({r.size for r in results}) != 1:
            sys.exit(f"{run}: sizes {sorted({r.size for r in results})}; name one as SIZE")
        for fold in sorted({r.fold for r in results}):
            jobs = sorted((r for r in results if r.fold == fold), key=lambda r: r.replicate)
            preds = [store.predictions(r.job_id) for r in jobs]
            y = preds[0].labels
            rows.append({"fold": fold, "networks": len(jobs),
                         "one_network": round(score(metric, y, preds[0].probs), 4),
                         "ensemble": round(score(metric, y, np.mean([p.probs for p in preds], 0)), 4),
                         "dead": sum(bool(r.degenerate) for r in jobs),
                         "restarts": sum(r.restarts or 0 for r in jobs)})
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    one = np.array([r["one_network"] for r in rows])
    ens = np.array([r["ensemble"] for r in rows])
    diff = ens - one
    low, high = stats.t.interval(0.95, len(diff) - 1, diff.mean(), stats.sem(diff))
    print(f"one network {one.mean():.3f} ± {one.std(ddof=1):.3f}; ensemble {ens.mean():.3f} ± "
          f"{ens.std(ddof=1):.3f} (worst {ens.min():.3f}); difference {diff.mean():+.3f} "
          f"({low:+.3f} to {high:+.3f}), won/tied/lost {(diff > 0).sum()}/{(diff == 0).sum()}/"
          f"{(diff < 0).sum()}, Wilcoxon p {stats.wilcoxon(diff).pvalue if diff.any() else 1.0:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
