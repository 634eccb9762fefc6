"""What an ensemble of replicates and test-time augmentation would give, from finished runs.

For every (fold, size) of each run: the test AUC of replicate 0 (one network), of the mean
probability of all replicates (an ensemble of that many networks, each trained from its own
initialisation in the same fold), and of each with test-time augmentation (the mean over the
8 rotations by 90 degrees and mirror images of each test image: the training augmentation
rotates by any angle and flips, so the network has seen all 8). Nothing is trained here:
the runs' stored networks and test sets are read (leukolearn.explain.runs.reload_cells
reloads the images and checks they are the ones the run was trained on).

    python offline_variants.py RUN [RUN ...] --out variants.csv --table ablation.csv

variants.csv: one row per run, fold and size; ablation.csv: per run, size and variant the
mean, s.d. (ddof 1), median and minimum over folds.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import numpy as np

from leukolearn.analysis.metrics import roc_auc
from leukolearn.explain.runs import reload_cells
from leukolearn.model.weights import load_model
from leukolearn.runstore.store import RunStore
from leukolearn.training.loop import predict_proba


def dihedral(images: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations by 90 degrees and their mirror images of (N, H, W, C) images."""
    out = []
    for flip in (False, True):
        base = images[:, :, ::-1] if flip else images
        for k in range(4):
            out.append(np.ascontiguousarray(np.rot90(base, k, axes=(1, 2))))
    return out


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    return roc_auc(labels, probs[:, 1])  # NaN for a one-class test set


def run_rows(path: str) -> list[dict]:
    store = RunStore.open(path)
    cells = reload_cells(store)
    groups = defaultdict(list)
    for record in store.results():
        groups[(record.fold, record.size)].append(record)
    rows = []
    for (fold, size), records in sorted(groups.items()):
        records.sort(key=lambda r: r.replicate)
        first = store.predictions(records[0].job_id)
        test, labels = first.test_idx, first.labels
        plain, tta = [], []
        for record in records:
            stored = store.predictions(record.job_id)
            assert np.array_equal(stored.test_idx, test)  # one test set per fold
            plain.append(stored.probs)
            model = load_model(store.weights_path(record.job_id))
            tta.append(np.mean([predict_proba(model, view) for view in dihedral(cells.images[test])],
                               axis=0))
        rows.append(dict(run=path, fold=fold, size=size, replicates=len(records),
                         restarts=sum(r.restarts or 0 for r in records),
                         dead=sum(bool(r.degenerate) for r in records),
                         single=auc(labels, plain[0]), single_tta=auc(labels, tta[0]),
                         ensemble=auc(labels, np.mean(plain, axis=0)),
                         ensemble_tta=auc(labels, np.mean(tta, axis=0))))
        print(rows[-1], flush=True)
    store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--table", required=True)
    args = ap.parse_args()
    rows = [row for path in args.runs for row in run_rows(path)]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(args.table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "size", "variant", "replicates", "n_folds", "mean", "sd",
                         "median", "min", "dead", "restarts"])
        for (run, size), group in sorted(groupby_run_size(rows).items()):
            for variant in VARIANTS:
                values = np.array([r[variant] for r in group])
                writer.writerow([run, size, variant, group[0]["replicates"], len(values),
                                 *(f"{v:.4f}" for v in (values.mean(), values.std(ddof=1),
                                                        np.median(values), values.min())),
                                 sum(r["dead"] for r in group), sum(r["restarts"] for r in group)])


VARIANTS = ("single", "single_tta", "ensemble", "ensemble_tta")


def groupby_run_size(rows: list[dict]) -> dict:
    groups = defaultdict(list)
    for row in rows:
        groups[(row["run"].rstrip("/").split("/")[-1], row["size"])].append(row)
    return groups


if __name__ == "__main__":
    main()
