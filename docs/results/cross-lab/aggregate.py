"""cross_lab.csv from the evaluations run_cross_lab.sh wrote: per preset, fold and lab the
share of normal cells called blast (per type and overall), blasts found, AUC; then the
mean over folds.

    python docs/results/cross-lab/aggregate.py EVALUATIONS_DIR OUT.csv
"""
from __future__ import annotations

import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(folder: str, out: str) -> None:
    rows = []
    for path in sorted(Path(folder).glob("*/evaluation.json")):
        preset, fold, lab = re.fullmatch(r"(.+)-(f\d+)-on-(.+)", path.parent.name).groups()
        ev = json.loads(path.read_text())
        positive = set(ev["positive_dataset_classes"])
        per_type = ev["called_positive_per_type"]
        neg_k = sum(v["k"] for k, v in per_type.items() if k not in positive)
        neg_n = sum(v["n"] for k, v in per_type.items() if k not in positive)
        row = {"preset": preset, "fold": fold, "lab": lab, "cells": ev["n_cells"],
               "normal_called_blast": round(neg_k / neg_n, 4) if neg_n else "",
               "normal_cells": neg_n,
               "blasts_found": sum(v["k"] for k, v in per_type.items() if k in positive),
               "blasts": sum(v["n"] for k, v in per_type.items() if k in positive),
               "auc": "" if ev["auc"]["value"] is None else round(ev["auc"]["value"], 4),
               "domain": (ev.get("domain") or {}).get("status", "")}
        for k, v in per_type.items():
            if k not in positive:
                row[f"fpr_{k}"] = round(v["value"], 4)
        rows.append(row)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["preset"], r["lab"])].append(r)
    for (preset, lab), rs in sorted(groups.items()):
        mean = {"preset": preset, "fold": "mean", "lab": lab}
        for key in rs[0]:
            vals = [r.get(key) for r in rs]
            if key not in mean and all(isinstance(v, (int, float)) for v in vals):
                mean[key] = round(float(np.mean(vals)), 4)
        rows.append(mean)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        if r["fold"] == "mean":
            print(r)


if __name__ == "__main__":
    main(*sys.argv[1:])
