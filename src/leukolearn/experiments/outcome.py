"""What a runner returns for one job of a sweep (`experiments.sweep`), whoever trains it:
the paper's CNN (`sweep.TrainingRunner`) or a baseline (`methods.FeatureRunner`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.experiments.protocol import Job


@dataclass
class JobOutcome:
    """What a runner returns for one job."""

    metric: float  # AUC (binary) or weighted F1 on the fold's test set; NaN if undefined
    best_epoch: int
    epochs_run: int
    seconds: float
    degenerate: bool  # constant predictions on validation
    test_probs: np.ndarray  # (n_test, n_classes), rows in job.test_idx order
    history: list[dict]
    model: Any = None  # a leukolearn model (PaperCNN), or None (then no weights file)
    metric_name: str = "auc"
    # Dead networks re-initialised before this one (TrainConfig.restarts): stored, so a
    # summary can say which results needed them.
    restarts: int = 0
    # How it ran, stored with it (None: not known, e.g. a fake runner): whether the fused C
    # kernels did the conv blocks, torch's intra-op threads of the training (the sums of a
    # CPU training depend on it; fixed since training.threads.TRAINING_THREADS), and the
    # device ("cpu", "cuda").
    kernels: bool | None = None
    threads: int | None = None
    device: str | None = None


Runner = Callable[[CellImages, Job], JobOutcome]
