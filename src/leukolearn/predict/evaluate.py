"""External validation: a model, or a RUN's fold ensemble, on labelled cells from anywhere.

A sweep's test folds come from the images it trained on, so they say how a model does on
more cells of the same lab. `evaluate` measures it on a labelled dataset of any layout
(another lab's folder or manifest), with what a decision needs:

- the binary view (the model's positive class against the rest): ROC-AUC, and sensitivity
  and specificity at the threshold `predict` would use (`predict.threshold`), each with its
  interval; the share of the cells of each cell type called positive (the false-positive
  rate per type, with Wilson intervals: which normal cells a blast detector mistakes), and
  the reliability curve;
- the multiclass view (a model of more than two classes): weighted F1 over the cells whose
  class the model knows, and the recall per class.

Intervals: a stratified percentile bootstrap for AUC and F1
(`analysis.metrics.stratified_bootstrap_ci`), Wilson for proportions.

Which dataset classes are positive: `positive` (dataset class names), else the model's
own positive class names where the dataset has them ("blast", "ig"), else the layout's
default blast classes (aml-lmu: MYO, MOB); where none of these exists (a set of normal
cells) every cell counts as negative and only false-positive rates are measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from leukolearn.analysis.calibration import ReliabilityCurve, reliability_curve
from leukolearn.analysis.metrics import (roc_auc, roc_auc_by_ranks, stratified_bootstrap_ci,
                                         weighted_f1, weighted_f1_by_counts, wilson_interval)
from leukolearn.data.cellimages import CellImages
from leukolearn.data.classes import default_positive
from leukolearn.errors import LeukolearnError
from leukolearn.files import json_safe, write_csv, write_json
from leukolearn.predict.domain import OUTSIDE_NOTE, SampleVerdict, cell_ratios, checks_of, sample_verdict
from leukolearn.predict.threshold import ThresholdSetting, resolve_threshold
from leukolearn.training.loop import predict_with_hidden

EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class Rate:
    """k of n, with its Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, k: int, n: int, confidence: float) -> "Rate":
        low, high = wilson_interval(k, n, confidence)
        return cls(int(k), int(n), low, high)

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else math.nan

    def to_dict(self) -> dict:
        return {"value": self.value, "k": self.k, "n": self.n, "ci": [self.low, self.high]}


@dataclass
class Evaluation:
    source: dict  # Predictor.describe()
    dataset: dict  # layout, root, class counts
    positive_model: list[str]  # the model's classes whose probabilities make the score
    positive_data: list[str]  # the dataset's classes counted as positive
    threshold: ThresholdSetting | None
    confidence: float
    auc: float = math.nan
    auc_ci: tuple[float, float] = (math.nan, math.nan)
    sensitivity: Rate | None = None
    specificity: Rate | None = None
    per_type: dict[str, Rate] = field(default_factory=dict)  # cells called positive, per type
    reliability: ReliabilityCurve | None = None
    weighted_f1: float = math.nan
    weighted_f1_ci: tuple[float, float] = (math.nan, math.nan)
    recall: dict[str, Rate] = field(default_factory=dict)  # multiclass: per model class
    not_in_model: dict[str, int] = field(default_factory=dict)  # multiclass: left out
    notes: list[str] = field(default_factory=list)
    domain: SampleVerdict | None = None  # the cells as one sample (predict.domain)
    domain_ratio: np.ndarray | None = None  # per cell: distance / the model's cell limit
    # Per cell, in the dataset's order.
    ids: Sequence[str] = ()
    classes: Sequence[str] = ()
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predicted: Sequence[str] = ()

    @property
    def is_positive(self) -> np.ndarray:
        return np.isin(np.asarray(self.classes, dtype=object), self.positive_data)

    def to_dict(self) -> dict:
        return json_safe({
            "model": self.source, "dataset": self.dataset, "confidence": self.confidence,
            "positive_model_classes": self.positive_model,
            "positive_dataset_classes": self.positive_data,
            "threshold": None if self.threshold is None else self.threshold.to_dict(),
            "n_cells": len(self.ids), "n_positive": int(self.is_positive.sum()),
            "auc": {"value": self.auc, "ci": list(self.auc_ci)},
            "sensitivity": self.sensitivity and self.sensitivity.to_dict(),
            "specificity": self.specificity and self.specificity.to_dict(),
            "called_positive_per_type": {k: r.to_dict() for k, r in self.per_type.items()},
            "reliability": self.reliability and self.reliability.to_dict(),
            "weighted_f1": {"value": self.weighted_f1, "ci": list(self.weighted_f1_ci)},
            "recall_per_class": {k: r.to_dict() for k, r in self.recall.items()},
            "classes_not_in_model": self.not_in_model, "notes": self.notes,
            "domain": self.domain and self.domain.to_dict(),
        })

    def write(self, out: str | Path) -> list[Path]:
        """evaluation.json, cells.csv, per_type.csv and the figure, into folder `out`."""
        from leukolearn.report.evaluation_figures import evaluation_figure
        from leukolearn.report.style import save_figure

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        called = self.called
        paths = [write_json(out / EVALUATION_FILE, self.to_dict()),
                 write_csv(out / "cells.csv", ["image_id", "class", "positive", "score",
                                               "called_positive", "predicted", "domain_ratio"],
                           zip(self.ids, self.classes, self.is_positive.astype(int), self.score,
                               called.astype(int), self.predicted,
                               self.domain_ratio if self.domain_ratio is not None
                               else [np.nan] * len(self.ids)), digits=6),
                 write_csv(out / "per_type.csv", ["class", "positive", "cells",
                                                  "called_positive", "rate", "ci_low", "ci_high"],
                           [(name, int(name in self.positive_data), r.n, r.k, r.value, r.low,
                             r.high) for name, r in self.per_type.items()], digits=4)]
        paths += save_figure(evaluation_figure(self), out, "evaluation")
        return paths

    @property
    def called(self) -> np.ndarray:
        if self.threshold is None:
            return np.zeros(len(self.ids), dtype=bool)
        return np.asarray(self.score) >= self.threshold.value


def dataset_positive(cells: CellImages, model_positive_names: Sequence[str],
                     layout: str, named: Sequence[str] | None) -> list[str]:
    """The dataset's classes counted as positive, by the rules of the module docstring."""
    names = set(cells.class_names)
    if named:
        missing = [n for n in named if n not in names]
        if missing:
            raise LeukolearnError(f"--positive {','.join(missing)}: no such class in the "
                                  f"dataset (its classes: {', '.join(cells.class_names)})")
        return list(named)
    own = [n for n in model_positive_names if n in names]
    if own:
        return own
    return [n for n in default_positive(layout) or () if n in names]


def evaluate(predictor, cells: CellImages, *, layout: str = "", positive: Sequence[str] | None = None,
             threshold: float | None = None, target_sensitivity: float | None = None,
             confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
             batch_size: int = 64) -> Evaluation:
    """Score `predictor` (a `predict.predictor.Predictor`) on the labelled `cells` (loaded
    with their own classes, at the model's input size)."""
    if cells.size != predictor.config.input_size:
        raise LeukolearnError(f"the cells are {cells.size} px, the model takes "
                              f"{predictor.config.input_size} px")
    passes = [predict_with_hidden(m, cells.images, batch_size=batch_size)
              for m in predictor.models]
    probs = np.mean([p for p, _ in passes], axis=0)
    ev = evaluate_probabilities(probs, predictor, cells, layout=layout, positive=positive,
                                threshold=threshold, target_sensitivity=target_sensitivity,
                                confidence=confidence, n_resamples=n_resamples, seed=seed)
    checks = checks_of(predictor.models)
    distances = np.column_stack([
        c.distances(cells.images, h) if c is not None else np.full(len(cells.labels), np.nan)
        for c, (_, h) in zip(checks, passes)])
    ev.domain_ratio = cell_ratios(checks, distances)
    ev.domain = sample_verdict(checks, distances)
    if ev.domain.status == "outside":
        ev.notes.append(f"these cells lie {OUTSIDE_NOTE.split(':')[0]} of the model "
                        f"({ev.domain.outside_share:.0%} of them beyond its cell limit): "
                        "`predict` withholds its call on samples like them")
    return ev


def evaluate_probabilities(probs: np.ndarray, predictor, cells: CellImages, *, layout: str = "",
                           positive: Sequence[str] | None = None,
                           threshold: float | None = None,
                           target_sensitivity: float | None = None, confidence: float = 0.95,
                           n_resamples: int = 2000, seed: int = 0) -> Evaluation:
    """`evaluate` on the model's class probabilities (N, n_classes) for `cells`."""
    model_names = predictor.class_names
    multiclass = len(model_names) > 2
    # A multiclass model counts the classes named by --positive (which must be its own);
    # a binary one its own positive class, whatever the dataset calls it.
    model_pos = (predictor.positive(positive) if multiclass and positive
                 else None if multiclass else predictor.positive(None))
    classes = [cells.class_names[i] for i in cells.labels]
    ev = Evaluation(source=predictor.describe(),
                    dataset={"layout": layout, "root": str(cells.source.root) if cells.source
                             else "", "class_counts": cells.class_counts()},
                    positive_model=[model_names[i] for i in model_pos or ()],
                    positive_data=[], threshold=None, confidence=confidence,
                    ids=list(cells.image_ids), classes=classes,
                    score=np.zeros(len(classes)), predicted=[model_names[i] for i in
                                                             probs.argmax(axis=1)])
    boot = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    if model_pos is not None:
        _binary_view(ev, predictor, cells, probs, model_pos, layout, positive, threshold,
                     target_sensitivity, boot)
    if multiclass:
        _multiclass_view(ev, cells, probs, model_names, boot)
    return ev


def _binary_view(ev: Evaluation, predictor, cells: CellImages, probs: np.ndarray,
                 model_pos: list[int], layout: str, named: Sequence[str] | None,
                 threshold: float | None, target_sensitivity: float | None, boot: dict) -> None:
    ev.positive_data = dataset_positive(cells, ev.positive_model, layout, named)
    if not ev.positive_data:
        ev.notes.append(f"no class of this dataset is the model's positive class "
                        f"({'+'.join(ev.positive_model)}); every cell counts as negative, "
                        "so only false-positive rates are measured (name its positive classes "
                        "with --positive)")
    ev.score = np.clip(probs[:, model_pos].sum(axis=1), 0, 1)
    ev.threshold, _ = resolve_threshold(predictor, model_pos, threshold=threshold,
                                        target_sensitivity=target_sensitivity)
    y = ev.is_positive
    called = ev.called
    conf = ev.confidence
    if y.any() and (~y).any():
        ev.auc = roc_auc(y, ev.score)
        ev.auc_ci = stratified_bootstrap_ci(roc_auc_by_ranks, y.astype(int), ev.score, **boot)
        ev.reliability = reliability_curve(y, ev.score)
    if y.any():
        ev.sensitivity = Rate.of(int(called[y].sum()), int(y.sum()), conf)
    if (~y).any():
        ev.specificity = Rate.of(int((~called[~y]).sum()), int((~y).sum()), conf)
    classes = np.asarray(ev.classes, dtype=object)
    for name in cells.class_names:
        here = classes == name
        if here.any():
            ev.per_type[name] = Rate.of(int(called[here].sum()), int(here.sum()), conf)


def _multiclass_view(ev: Evaluation, cells: CellImages, probs: np.ndarray,
                     model_names: Sequence[str], boot: dict) -> None:
    index = {name: i for i, name in enumerate(model_names)}
    classes = np.asarray(ev.classes, dtype=object)
    known = np.isin(classes, list(index))
    ev.not_in_model = {name: int((classes == name).sum()) for name in cells.class_names
                       if name not in index and (classes == name).any()}
    if ev.not_in_model:
        ev.notes.append(f"left out of the multiclass view (classes the model does not know): "
                        f"{', '.join(f'{k} ({v})' for k, v in ev.not_in_model.items())}")
    if not known.any():
        ev.notes.append("no cell of this dataset is of a class the model knows: no weighted F1")
        return
    y = np.array([index[c] for c in classes[known]])
    pred = probs[known].argmax(axis=1)
    ev.weighted_f1 = weighted_f1(y, pred)
    ev.weighted_f1_ci = stratified_bootstrap_ci(weighted_f1_by_counts, y, pred, **boot)
    for name, i in index.items():
        mine = y == i
        if mine.any():
            ev.recall[name] = Rate.of(int((pred[mine] == i).sum()), int(mine.sum()),
                                      ev.confidence)
