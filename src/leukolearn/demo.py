"""`leukolearn demo`: the whole path on synthetic cells, with nothing of the user's.

Writes labelled synthetic cells as class folders, loads them like user data, trains with
the paper's settings (fewer epochs), tests, and then predicts three synthetic "patient"
samples whose true blast fractions are known (5 %, 25 %, 60 %).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukolearn.files import atomic_write
from leukolearn.predict.counts import SampleResult

# The defaults of `run_demo` and of `leukolearn demo`, here where the CLI reads them at its
# start: so torch, scipy (the synthetic cells) and PIL are imported inside the functions.
PER_CLASS = 80
MAX_EPOCHS = 60
PATIENCE = 15

PATIENT_BLAST_FRACTIONS = {"patient_A": 0.05, "patient_B": 0.25, "patient_C": 0.60}
CELLS_PER_PATIENT = 40


@dataclass
class DemoResult:
    metrics: dict
    samples: list[SampleResult]
    true_fractions: dict[str, float]
    out: Path


def run_demo(out: Path, *, per_class: int = PER_CLASS, seed: int = 0,
             max_epochs: int = MAX_EPOCHS, patience: int = PATIENCE,
             progress: bool = True) -> DemoResult:
    from leukolearn.data.dataset import load_dataset
    from leukolearn.data.synthetic import make_binary, write_image_folder
    from leukolearn.experiments.single import SplitSizes, default_train_config, train_and_evaluate
    from leukolearn.predict.predictor import PredictOptions, predict_samples

    image_dir = out / "images"
    write_image_folder(make_binary(per_class, seed=seed), image_dir)
    cells = load_dataset("folder", image_dir, positive=["blast"], progress=progress)
    n_test = n_val = max(4, len(cells) // 8)
    sizes = SplitSizes(train=len(cells) - n_test - n_val, val=n_val, test=n_test)
    config = default_train_config(cells, max_epochs=max_epochs, patience=patience)
    metrics = train_and_evaluate(cells, sizes, config, seed=seed, out_dir=out / "model",
                                 progress=progress)
    patients = _write_patients(out / "patients", seed=seed + 1)
    report = predict_samples(out / "model" / "model.safetensors", [patients], PredictOptions(),
                             progress=progress)
    report.write(out / "predictions")
    return DemoResult(metrics, report.sample_results, PATIENT_BLAST_FRACTIONS, out)


def _write_patients(root: Path, seed: int) -> Path:
    """One folder per patient holding CELLS_PER_PATIENT new cells (not seen in training)."""
    from PIL import Image

    from leukolearn.data.synthetic import make_binary

    pool = make_binary(CELLS_PER_PATIENT, seed=seed)  # 40 blasts and 40 others
    blasts, others = np.flatnonzero(pool.labels == 1), np.flatnonzero(pool.labels == 0)
    for name, fraction in PATIENT_BLAST_FRACTIONS.items():
        n_blasts = round(fraction * CELLS_PER_PATIENT)
        chosen = np.concatenate([blasts[:n_blasts], others[:CELLS_PER_PATIENT - n_blasts]])
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in chosen:
            image = Image.fromarray(pool.images[i])
            atomic_write(folder / f"{pool.image_ids[i]}.png",
                         lambda tmp, image=image: image.save(tmp, format="PNG"))
    return root
