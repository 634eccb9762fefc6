"""The models a sweep can train (`sweep --model NAME`, `leukolearn models`): the paper's CNN
and baselines, all through the same protocol, folds, run store, summary and figures.

- "paper-cnn": the paper's 7,210-parameter CNN (`experiments.sweep.TrainingRunner`), with
  the preset's training settings;
- "wide-cnn": the same network and training with 4x the filters in every block (87,298
  parameters): whether the paper's network is too small for its task;
- "handcrafted-logreg": colour, texture and shape features of the segmented cell, as the
  ALL-IDB papers before deep learning built them, into a logistic regression
  (`model.handcrafted`);
- "background-logreg": the colour of the image border alone (no cell in it): the
  batch-effect control as a method. Where it scores high, the data let a classifier
  succeed without looking at the cell.

A baseline trains on the job's training images only (it needs no validation set) and
saves no weights file; its features are computed once per dataset in each process. Of the
preset's training settings it takes the one that changes what an image is, stain
normalisation (`robust-stain-*`): fitted on the job's training cells and applied to every
image, as the CNN's training does, so that the batch-effect control measures what is left
of the shortcut after normalisation. Augmentation is the CNN's training and does not apply.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.experiments.protocol import Job

DEFAULT_MODEL = "paper-cnn"


@dataclass(frozen=True)
class ModelKind:
    name: str
    about: str
    feature_set: str | None = None  # None: a CNN
    width: int = 1  # a CNN's filters per block, times the paper's (TrainConfig.width)


MODELS = {m.name: m for m in (
    ModelKind("paper-cnn", "the paper's CNN (7,210 parameters), trained with the preset's settings"),
    ModelKind("wide-cnn", "the paper's CNN with 4x its filters per block (16-64), trained "
              "with the preset's settings", width=4),
    ModelKind("handcrafted-logreg", "colour histograms, GLCM and LBP texture, nucleus and cell "
              "shape from the stain segmentation; logistic regression", "cell"),
    ModelKind("background-logreg", "the colour of the image border only (no cell): the "
              "batch-effect control as a method; logistic regression", "background"),
)}


def check_model(name: str) -> ModelKind:
    if name not in MODELS:
        raise LeukolearnError(f"unknown model {name!r}; choose from {', '.join(MODELS)} "
                              "(`leukolearn models`)")
    return MODELS[name]


def runner_for(config: Any):
    """The baseline runner that trains `config.model` (a SweepConfig) on one job; None for
    the CNN, which `experiments.sweep.TrainingRunner` trains."""
    kind = check_model(config.model)
    if kind.feature_set is None:
        return None  # the caller's TrainingRunner (experiments.sweep)
    return FeatureRunner(kind.feature_set, config.metric, config.train.stain_norm)


class FeatureRunner:
    """A classifier on hand-crafted features, as a sweep runner (`experiments.sweep`)."""

    def __init__(self, feature_set: str, metric: str = "auc", stain_norm: str | None = None):
        self.feature_set = feature_set
        self.metric = metric
        self.stain_norm = stain_norm

    def __call__(self, cells: CellImages, job: Job):
        from leukolearn.analysis.metrics import score
        from leukolearn.model.handcrafted import class_probabilities, make_classifier

        start = time.perf_counter()
        train, test = np.asarray(job.train_idx), np.asarray(job.test_idx)
        features = (_normalised_features(cells, train, test, self.feature_set, self.stain_norm)
                    if self.stain_norm else _features(cells, self.feature_set))
        y_train = cells.labels[train]
        if len(np.unique(y_train)) < 2:  # one class only: its share, for every cell
            probs = np.zeros((len(test), cells.n_classes))
            probs[:, y_train[0]] = 1.0
        else:
            classifier = make_classifier(job.seed).fit(features[train], y_train)
            probs = class_probabilities(classifier, features[test], cells.n_classes)
        metric = score(self.metric, cells.labels[test], probs)
        return JobOutcome(metric=float(metric), best_epoch=0, epochs_run=0,
                          seconds=time.perf_counter() - start,
                          degenerate=bool(np.ptp(probs, axis=0).max() == 0),
                          test_probs=probs.astype(np.float32), history=[], model=None,
                          metric_name=self.metric)


_CACHE: dict[tuple[str, str], np.ndarray] = {}  # (fingerprint, feature set) -> features


def _features(cells: CellImages, feature_set: str) -> np.ndarray:
    from leukolearn.model.handcrafted import extract

    key = (cells.fingerprint, feature_set)
    if key not in _CACHE:
        _CACHE.clear()  # one dataset at a time: a process sweeps one
        _CACHE[key] = extract(cells.images, feature_set)
    return _CACHE[key]


def _normalised_features(cells: CellImages, train: np.ndarray, test: np.ndarray,
                         feature_set: str, method: str) -> np.ndarray:
    """Features of the training and test images after stain normalisation to the training
    cells (`data.stain`), in rows indexed as `cells` (other rows zero): the target differs
    from job to job, so nothing is cached."""
    from leukolearn.data.stain import fit_stain, normalise
    from leukolearn.model.handcrafted import extract

    target = fit_stain(cells.images[train], method)
    rows = np.union1d(train, test)
    computed = extract(normalise(cells.images[rows], target), feature_set)
    features = np.zeros((len(cells), computed.shape[1]))
    features[rows] = computed
    return features
