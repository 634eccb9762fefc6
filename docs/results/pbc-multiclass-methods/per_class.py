"""Per cell type, pooled over a run's folds: the F1 of one network (replicate 0), of the
ensemble of a run's replicates (the mean of their probabilities) and of a baseline run
in the same folds, and the ensemble's largest confusions: which classes bound the
weighted F1.

    python docs/results/pbc-multiclass-methods/per_class.py CNN_RUN BASELINE_RUN OUT.csv
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from leukolearn.runstore.store import RunStore


def pooled(run: str) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]], set[int]]:
    """(class names, {"one": (labels, predicted), "ensemble": ...}, folds) over all folds."""
    parts: dict[str, list] = defaultdict(list)
    with RunStore.open(run) as store:
        names = list(store.dataset_info().class_names)
        results = store.results()
        folds = {r.fold for r in results}
        for fold in sorted(folds):
            jobs = sorted((r for r in results if r.fold == fold), key=lambda r: r.replicate)
            preds = [store.predictions(r.job_id) for r in jobs]
            parts["one"].append((preds[0].labels, preds[0].probs.argmax(1)))
            parts["ensemble"].append((preds[0].labels,
                                      np.mean([p.probs for p in preds], 0).argmax(1)))
    return names, {k: tuple(np.concatenate(x) for x in zip(*v)) for k, v in parts.items()}, folds


def main(cnn_run: str, baseline_run: str, out: str) -> None:
    names, cnn, folds = pooled(cnn_run)
    base_names, base, base_folds = pooled(baseline_run)
    if base_names != names or base_folds != folds:
        sys.exit(f"the runs differ: classes {names} / {base_names}, folds {folds} / {base_folds}")
    arms = {"one_network": cnn["one"], "ensemble": cnn["ensemble"], "baseline": base["one"]}
    f1 = {arm: f1_score(y, p, average=None, labels=range(len(names)), zero_division=0)
          for arm, (y, p) in arms.items()}
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *arms])
        for k, name in enumerate(names):
            writer.writerow([name, *(round(float(f1[arm][k]), 3) for arm in arms)])
    print(f"folds {sorted(folds)}; F1 per class (pooled):")
    for k, name in enumerate(names):
        print(f"  {name:14s} " + "  ".join(f"{arm} {f1[arm][k]:.3f}" for arm in arms))
    y, p = cnn["ensemble"]
    counts = confusion_matrix(y, p, labels=range(len(names)))
    np.fill_diagonal(counts, 0)
    print("the ensemble's largest confusions (true -> called, cells):")
    for flat in np.argsort(counts, axis=None)[::-1][:6]:
        true, called = np.unravel_index(flat, counts.shape)
        print(f"  {names[true]} -> {names[called]}: {counts[true, called]} of {(y == true).sum()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
