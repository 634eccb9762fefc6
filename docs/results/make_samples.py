"""Build "patient samples" with a known blast fraction from images a model never saw.

We have no real patient samples with a ground-truth blast count, so the README's `predict`
examples use mixtures of labelled images that the chosen fold model neither trained nor
stopped on (its test set plus the images its training size left out). Each sample is a
folder of symlinks, the layout `leukolearn predict` reads (one sample per subfolder).

    python docs/results/make_samples.py RUN JOB_ID OUT --cells 100 --fractions 0.05,0.2,0.4

Prints the truth per sample; the same arguments always give the same samples (--seed).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from leukolearn.runstore.store import RunStore


def image_path(root: Path, image_id: str) -> Path:
    """The file of an image id: ids are relative paths (folder layouts) or stems (ALL-IDB2)."""
    if (root / image_id).is_file():
        return root / image_id
    matches = sorted(root.rglob(f"{image_id}.*"))
    if not matches:
        raise SystemExit(f"no file for image id {image_id!r} under {root}")
    return matches[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("job_id", help="e.g. f00-n200-s0: the model the samples are unseen by")
    parser.add_argument("out", type=Path)
    parser.add_argument("--cells", type=int, default=100, help="cells per sample")
    parser.add_argument("--fractions", default="0.05,0.2,0.4", help="positive share per sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with RunStore.open(args.run) as store:
        train, val, _ = store.split(args.job_id)
        ids = store.image_ids()
        labels = store.image_labels()
        info = store.dataset_info
    unseen = np.setdiff1d(np.arange(len(ids)), np.concatenate([train, val]))
    positive = unseen[labels[unseen] == 1]
    negative = unseen[labels[unseen] != 1]
    rng = np.random.default_rng(args.seed)
    rng.shuffle(positive)
    rng.shuffle(negative)
    root = Path(info.root)
    truth = {}
    for fraction in (float(f) for f in args.fractions.split(",")):
        n_pos = round(fraction * args.cells)
        if n_pos > len(positive) or args.cells - n_pos > len(negative):
            raise SystemExit(f"too few unseen images for {fraction:.0%} of {args.cells} cells "
                             f"({len(positive)} positive, {len(negative)} other left)")
        picked = np.concatenate([positive[:n_pos], negative[:args.cells - n_pos]])
        positive, negative = positive[n_pos:], negative[args.cells - n_pos:]  # no cell twice
        name = f"sample_{round(fraction * 100):02d}pct"
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in picked:
            source = image_path(root, ids[i]).resolve()
            link = folder / f"{i:05d}_{source.name}"
            if not link.exists():
                link.symlink_to(source)
        truth[name] = {"cells": int(len(picked)), "positive": int(n_pos)}
    (args.out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(json.dumps(truth, indent=2))


if __name__ == "__main__":
    main()
