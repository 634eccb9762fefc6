"""Measure the domain check on three labs: a sweep's fold models (one lab) against the
cells of the other labs.

    python docs/results/cross-lab/domain_check.py RUN --other folder:PBC_ROOT \
        --other aml-lmu:AML_ROOT --out docs/results/cross-lab/domain_check_<name>.csv

For every fold whose job at the largest training size is finished: the check is fitted on
that job's training cells and scaled by its validation cells (as `train` and `sweep` do),
then scores the fold's test cells (in-domain, unseen) and every cell of the other labs.
Prints, per fold and pooled: the AUROC of the distance (in-domain test vs other labs), the
share of cells outside, and the share of samples outside, for samples of --sample-cells
cells (in-domain: the fold's test cells, resampled; other labs: consecutive cells).
"""
from __future__ import annotations

import argparse
import csv
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from leukolearn.analysis.domain import fit_domain, sample_domain
from leukolearn.data.dataset import load_dataset
from leukolearn.explain.runs import reload_cells
from leukolearn.model.weights import load_model
from leukolearn.runstore.store import RunStore
from leukolearn.training.loop import predict_with_hidden


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--other", action="append", default=[], help="LAYOUT:ROOT")
    ap.add_argument("--sample-cells", type=int, default=20)
    ap.add_argument("--samples", type=int, default=200, help="in-domain resamples per fold")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with RunStore.open(args.run) as store:
        done = [r for r in store.results() if r.weights]
        largest = max(r.size for r in done)
        jobs = sorted((r for r in done if r.size == largest), key=lambda r: r.fold)
        splits = {r.job_id: store.split(r.job_id) for r in jobs}
        weights = {r.job_id: store.weights_path(r.job_id) for r in jobs}
        cells = reload_cells(store)  # as the sweep saw them (fingerprint checked)
    others = {}
    for spec in args.other:
        layout, root = spec.split(":", 1)
        others[f"{layout}:{root.rstrip('/').split('/')[-1]}"] = load_dataset(
            layout, root, size=cells.size, progress=False)
    rng = np.random.default_rng(0)
    rows, pooled_in, pooled_out = [], [], []
    k = args.sample_cells
    for job in jobs:
        model = load_model(weights[job.job_id])
        train, val, test = splits[job.job_id]
        _, h_train = predict_with_hidden(model, cells.images[train])
        _, h_val = predict_with_hidden(model, cells.images[val])
        _, h_test = predict_with_hidden(model, cells.images[test])
        check = fit_domain(cells.images[train], h_train, cells.images[val], h_val)
        d_in = check.distances(cells.images[test], h_test)
        in_samples = [sample_domain(check, rng.choice(d_in, size=min(k, len(d_in)), replace=False)).outside
                      for _ in range(args.samples)]
        pooled_in.append(d_in / check.cell_limit)
        row = {"fold": job.fold, "job": job.job_id, "n_train": len(train), "n_val": len(val),
               "n_test": len(test), "cell_limit": round(check.cell_limit, 3),
               "test_outside": round(float(check.outside(d_in).mean()), 3),
               "test_samples_outside": round(float(np.mean(in_samples)), 3)}
        for name, other in others.items():
            _, h_other = predict_with_hidden(model, other.images)
            d_out = check.distances(other.images, h_other)
            pooled_out.append(d_out / check.cell_limit)
            groups = [d_out[i:i + k] for i in range(0, len(d_out) - k + 1, k)]
            row[f"auroc_vs_{name}"] = round(roc_auc_score(
                np.r_[np.zeros(len(d_in)), np.ones(len(d_out))], np.r_[d_in, d_out]), 4)
            row[f"outside_{name}"] = round(float(check.outside(d_out).mean()), 3)
            row[f"samples_outside_{name}"] = round(float(np.mean(
                [sample_domain(check, g).outside for g in groups])), 3)
        rows.append(row)
        print(row, flush=True)
    d_in, d_out = np.concatenate(pooled_in), np.concatenate(pooled_out)
    pooled = {"fold": "pooled", "auroc_pooled": round(roc_auc_score(
        np.r_[np.zeros(len(d_in)), np.ones(len(d_out))], np.r_[d_in, d_out]), 4),
        "test_samples_outside": round(float(np.mean([r["test_samples_outside"] for r in rows])), 3)}
    print(pooled)
    rows.append(pooled)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
