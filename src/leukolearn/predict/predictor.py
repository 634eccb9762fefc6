"""Applying saved models to new cells: per-cell calls and per-sample blast fractions.

Sources (`load_predictor`):
- a model file (`model.safetensors`, or the folder `leukolearn train --out` wrote), of one
  network or of an ensemble (`train --ensemble K`: the mean of their probabilities);
- a RUN (a sweep's run directory): every fold model (and replicate) of one training size,
  the largest by default, averaged: the ensemble's blast probability is the mean of theirs.

Threshold: by the rules in `leukolearn.predict.threshold` (given, chosen for a target sensitivity
on a RUN's pooled test-fold predictions or stored in the model by `leukolearn calibrate`,
else 0.5).

Samples: folders (one sample per subfolder) or a manifest CSV, by the rules of
`leukolearn.predict.samples`. Per sample:
the blast fraction, its Wilson interval and the diagnostic call (`leukolearn.predict.counts`);
where the classifier's error rates at the threshold are known from held-out labelled cells
(`leukolearn.predict.threshold.error_rates`) also the adjusted count, corrected for them, with its
interval, and the call is made on that (`raw_count` switches the correction off).

Positive class (`Predictor.positive`): as `--positive` names it, else as the model file
records it, else by the model's class names (`leukolearn.data.classes.positive_classes`: "blast",
or the class a binary task was trained to find, e.g. "ig" of ("other", "ig")); a model whose
names do not say (two classes "lymphocyte", "neutrophil") is refused, never guessed.

Outputs (`PredictionReport.write`): cells.csv, samples.csv, summary.json and, where the
threshold's calibration is known, the reliability diagram. The columns keep their names
("blast", "blast_probability", "n_blasts", "blast_fraction") whatever the positive class is
called, so that a script reading them works with every model; `predicted`, the `p_<class>`
columns, summary.json's `positive_classes` / `positive_name` and the printed table name it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from leukolearn.analysis.calibration import ReliabilityCurve
from leukolearn.data.classes import positive_classes
from leukolearn.data.decode import read_image
from leukolearn.errors import BadFileError, LeukolearnError
from leukolearn.files import write_csv, write_json
from leukolearn.model.cnn import PaperCNN
from leukolearn.model.weights import load_model, load_models
from leukolearn.predict.counts import (CONFIDENCE, DIAGNOSTIC_THRESHOLD, MIN_SEPARATION, ErrorRates, SampleResult, check_fraction, summarize_sample)
from leukolearn.predict.domain import checks_of, sample_verdict, with_verdict
from leukolearn.predict.samples import (collect_samples, read_sample_manifest)
from leukolearn.predict.threshold import (ThresholdSetting, error_rates, is_run_dir, positive_name, recorded_positive, resolve_threshold, run_validation_predictions, stored_calibration)
from leukolearn.predict.batches import predict_with_domain

MODEL_FILE = "model.safetensors"


# ---- models ------------------------------------------------------------------------------------
@dataclass
class Predictor:
    """One model or a RUN's fold ensemble, with what is known about its calibration."""

    models: list[PaperCNN]
    source: Path
    kind: str  # "model" | "run"
    size: int | None = None  # RUN: training size of the ensemble
    fold: int | None = None  # RUN: the one fold whose models these are (None: every fold)
    job_ids: list[str] = field(default_factory=list)
    _held_out: dict = field(default_factory=dict, repr=False)  # see held_out_predictions
    # RUN: the class names the run recorded, where its models name them differently (see
    # load_predictor); None: the models' own.
    names: tuple[str, ...] | None = None

    def held_out_predictions(self, positive: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """RUN: (is_positive, positive score) pooled over the test folds of the ensemble's
        jobs, read from the store once: the threshold and the error rates both use them."""
        key = tuple(positive)
        if key not in self._held_out:
            self._held_out[key] = run_validation_predictions(self.source, self.job_ids, positive)
        return self._held_out[key]

    @property
    def config(self):
        return self.models[0].config

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.names or self.config.class_names

    def positive(self, named: Sequence[str] | None = None) -> list[int]:
        """Indices of the positive classes: `named` (--positive), else those the model file
        records, else by the class names; a LeukolearnError asking for --positive where
        none of these says (see `leukolearn.data.classes.positive_classes`)."""
        own = self.class_names == self.config.class_names
        return positive_classes(self.class_names, named,
                                recorded_positive(self.models[0]) if own else None)

    def describe(self) -> dict:
        d = {"kind": self.kind, "path": str(self.source), "class_names": list(self.class_names),
             "input_size": self.config.input_size, "n_models": len(self.models)}
        if self.kind == "run":
            d.update(training_size=self.size, fold=self.fold, jobs=self.job_ids)
        return d


def load_predictor(path: str | Path, *, size: int | None = None,
                   fold: int | None = None) -> Predictor:
    """A model file, a `train --out` folder, or a RUN (ensemble at `size`, default largest,
    of every fold's models or of `fold`'s: its replicates, the ensemble a sweep with
    --replicates K --ensemble scores on that fold's test set)."""
    path = Path(path)
    if is_run_dir(path):
        from leukolearn.runstore.store import RunStore

        with RunStore.open(path) as store:
            with_weights = [r for r in store.results() if r.weights]
            available = sorted({r.size for r in with_weights})
            if not available:
                raise LeukolearnError(f"{path}: no finished job with saved weights")
            if size is None:
                size = available[-1]
            elif size not in available:
                raise LeukolearnError(f"{path}: no models at training size {size} "
                                      f"(available: {', '.join(map(str, available))})")
            jobs = [r for r in with_weights if r.size == size and fold in (None, r.fold)]
            if not jobs:
                folds = sorted({r.fold for r in with_weights if r.size == size})
                raise LeukolearnError(f"{path}: no models of fold {fold} at training size "
                                      f"{size} (folds with models: {', '.join(map(str, folds))})")
            models = [load_model(store.weights_path(r.job_id)) for r in jobs]
            recorded = tuple(store.dataset_info.class_names)
        shapes = {(m.config.input_size, m.config.n_classes) for m in models}
        names = {m.config.class_names for m in models}
        # Models of one run may name the same classes differently: a run begun when every
        # binary task was ("other", "blast") and resumed since names its new models' classes
        # as given, ("other", "ig"). The run refused to resume on other labels (its
        # fingerprint), so class k is the same class in every model; the run's own record
        # (dataset.json, written when it began) names them.
        if len(shapes) > 1 or (len(names) > 1 and len(recorded) != models[0].config.n_classes):
            raise LeukolearnError(f"{path}: the models at size {size} disagree on input size "
                                  "or classes")
        return Predictor(models, path, "run", size, fold, [r.job_id for r in jobs],
                         names=recorded if len(names) > 1 else None)
    if size is not None or fold is not None:
        raise LeukolearnError(f"{'--size' if size is not None else '--fold'} applies to a RUN "
                              "directory, not to a single model")
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    return Predictor(load_models(path), path, "model")  # one network, or an ensemble file's


# ---- samples ----------------------------------------------------------------------------------
@dataclass
class PredictOptions:
    size: int | None = None  # RUN: training size of the ensemble (default: the largest)
    threshold: float | None = None
    target_sensitivity: float | None = None
    positive: Sequence[str] | None = None  # class names counted as blasts
    diagnostic_threshold: float = DIAGNOSTIC_THRESHOLD
    confidence: float = CONFIDENCE
    sample_col: str | None = None  # manifest CSV: the column naming the sample
    batch_size: int = 64
    skip_bad: bool = False  # False: the first unreadable image stops with its name
    raw_count: bool = False  # True: no adjusted count, the call is on the raw count
    # The error rates come from `calibrate` on labelled cells of the lab the samples are
    # from: a sample outside the training domain still gets its call (predict.domain).
    lab_calibrated: bool = False

    def __post_init__(self) -> None:
        # Before any work: a bad fraction would otherwise surface after every image was
        # predicted, or not at all (--confidence 95 made NaN intervals).
        check_fraction("--confidence", self.confidence)
        check_fraction("--diagnostic-threshold", self.diagnostic_threshold)
        if self.threshold is not None:
            check_fraction("--threshold", self.threshold, zero=True, one=True)
        if self.target_sensitivity is not None:
            check_fraction("--target-sensitivity", self.target_sensitivity, one=True)
        if self.batch_size < 1:
            raise LeukolearnError(f"batch size must be at least 1, got {self.batch_size}")


@dataclass
class PredictionReport:
    predictor: Predictor
    options: PredictOptions
    paths: list[Path]
    samples: list[str]
    probs: np.ndarray  # (N, n_classes)
    score: np.ndarray  # (N,) blast probability
    is_blast: np.ndarray  # (N,) bool
    positive: list[int]
    threshold: ThresholdSetting
    calibration: ReliabilityCurve | None
    sample_results: list[SampleResult]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    error_rates: ErrorRates | None = None  # at the threshold; None: no correction
    error_rates_note: str = ""  # where they come from, or why there are none

    @property
    def adjusted(self) -> bool:
        """Whether the samples carry adjusted counts."""
        return self.error_rates is not None and self.error_rates.usable

    @property
    def positive_name(self) -> str:
        """The positive class in words ("blast", "ig", "MYO+MOB"), for labels."""
        return positive_name(self.predictor.class_names, self.positive)

    def predicted_names(self) -> list[str]:
        names = self.predictor.class_names
        if len(names) == 2 and len(self.positive) == 1:
            other = names[1 - self.positive[0]]
            return [names[self.positive[0]] if b else other for b in self.is_blast]
        return [names[i] for i in self.probs.argmax(axis=1)]

    def summary(self) -> dict:
        o = self.options
        return {
            "source": self.predictor.describe(),
            "positive_classes": [self.predictor.class_names[i] for i in self.positive],
            "positive_name": self.positive_name,
            "threshold": self.threshold.to_dict(),
            "calibration": None if self.calibration is None else {
                "on": self._calibration_source(), **self.calibration.to_dict()},
            "diagnostic_threshold": o.diagnostic_threshold, "confidence": o.confidence,
            "interval": "Wilson score",
            "error_rates": None if self.error_rates is None else self.error_rates.to_dict(),
            "adjusted_count": self.adjusted_count_info(),
            "n_cells": len(self.paths), "n_samples": len(self.sample_results),
            "skipped": [{"path": str(p), "problem": why} for p, why in self.skipped],
            "samples": [s.to_dict() for s in self.sample_results],
        }

    def adjusted_count_info(self) -> dict:
        r = self.error_rates
        if r is None:
            why_not = self.error_rates_note
        elif not r.usable:
            why_not = (f"TPR - FPR = {r.separation:.3f} < {MIN_SEPARATION:g}: the classifier "
                       "separates the classes too poorly to correct its count")
        else:
            why_not = None
        return {"applied": self.adjusted, "why_not": why_not,
                "method": "(q - FPR) / (TPR - FPR) clipped to [0, 1] (adjusted count, Forman "
                          "2008; Rogan-Gladen); interval from the Wilson intervals of q, TPR "
                          "and FPR at their extreme corners; undefined (adjusted_note) where "
                          "q's interval lies wholly below FPR's or above TPR's",
                "assumes": "TPR and FPR on the new samples equal those on the held-out cells"}

    def _calibration_source(self) -> str:
        if self.predictor.kind == "run":
            return (f"pooled test-fold predictions of the single fold models at training size "
                    f"{self.predictor.size}")
        stored = stored_calibration(self.predictor.models[0]) or {}
        return stored.get("source") or "the labelled cells `leukolearn calibrate` was given"

    def write(self, out_dir: str | Path) -> list[Path]:
        """DIR/cells.csv, DIR/samples.csv, DIR/summary.json (+ reliability.png/svg)."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise LeukolearnError(f"{out_dir} is a file; --out names a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        names = self.predictor.class_names
        cells_header = ["path", "sample", "predicted", "blast", "blast_probability",
                        *[f"p_{n}" for n in names]]
        cells = []
        for path, sample, pred, blast, s, p in zip(self.paths, self.samples, self.predicted_names(),
                                                   self.is_blast, self.score, self.probs):
            cells.append([str(path), sample, pred, int(blast), s, *p])  # floats: 6 decimals
        samples_header = ["sample", "n_cells", "n_blasts", "blast_fraction", "ci_low", "ci_high",
                          "above_threshold", "call", "adjusted_fraction", "adjusted_ci_low",
                          "adjusted_ci_high", "call_on", "adjusted_note", "domain",
                          "domain_distance_ratio", "domain_outside_share"]
        samples = []
        for r in self.sample_results:
            # floats: 4 decimals; a NaN (no adjusted count) empty, by write_csv's one rule
            samples.append([r.sample, r.n_cells, r.n_blasts, r.blast_fraction, r.ci_low,
                            r.ci_high, int(r.above_threshold), r.call, r.adjusted_fraction,
                            r.adjusted_ci_low, r.adjusted_ci_high, r.call_on, r.adjusted_note,
                            r.domain, r.domain_distance_ratio, r.domain_outside_share])
        written = [write_csv(out_dir / "cells.csv", cells_header, cells, digits=6),
                   write_csv(out_dir / "samples.csv", samples_header, samples, digits=4),
                   write_json(out_dir / "summary.json", self.summary())]
        if self.calibration is not None and self.calibration.n:
            from leukolearn.report.analysis_figures import reliability_diagram
            from leukolearn.report.style import save_figure

            label = "Fold models" if self.predictor.kind == "run" else "Model"
            written += save_figure(reliability_diagram(self.calibration, label=label,
                                                       positive=self.positive_name),
                                   out_dir, "reliability")
        return written


def predict_samples(source: str | Path, inputs: Sequence[str | Path], options: PredictOptions | None = None,
                    *, progress: bool = True) -> PredictionReport:
    """The whole `leukolearn predict`: load, group into samples, predict, threshold, count."""
    o = options or PredictOptions()  # its fractions are checked when it is made
    predictor = load_predictor(source, size=o.size)
    positive = predictor.positive(o.positive)
    setting, curve = resolve_threshold(predictor, positive, threshold=o.threshold,
                                       target_sensitivity=o.target_sensitivity)
    inputs = [Path(p) for p in inputs]
    if any(p.suffix.lower() == ".csv" for p in inputs):
        if len(inputs) != 1:
            raise LeukolearnError("give a manifest CSV on its own, without other paths")
        pairs = read_sample_manifest(inputs[0], o.sample_col)
    elif o.sample_col is not None:
        raise LeukolearnError("--sample-col needs a manifest CSV as the input")
    else:
        pairs = collect_samples(inputs)
    paths = [p for p, _ in pairs]
    checks = checks_of(predictor.models)
    if o.lab_calibrated and stored_calibration(predictor.models[0]) is None:
        raise LeukolearnError("--lab-calibrated: the model holds no calibration; run "
                              "`leukolearn calibrate --part all` on this lab's labelled cells")
    probs, dist = predict_with_domain(predictor.models, paths, checks, o.batch_size, progress,
                                      skip_bad=o.skip_bad)
    bad = np.isnan(probs).any(axis=1)
    skipped = [(paths[i], _bad_reason(paths[i])) for i in np.flatnonzero(bad)]
    keep = ~bad
    paths = [p for p, k in zip(paths, keep) if k]
    samples = [s for (_, s), k in zip(pairs, keep) if k]
    probs, dist = probs[keep], dist[keep]
    if not paths:
        raise LeukolearnError("no image could be read")
    score = probs[:, positive].sum(axis=1)
    is_blast = score >= setting.value
    if o.raw_count:
        rates, note = None, "switched off (--raw-count)"
    else:
        rates, note = error_rates(predictor, positive, setting.value)
    order = list(dict.fromkeys(samples))
    sample_arr = np.array(samples, dtype=object)
    results = [with_verdict(summarize_sample(s, is_blast[sample_arr == s], o.diagnostic_threshold,
                                             o.confidence, rates),
                            sample_verdict(checks, dist[sample_arr == s]),
                            lab_calibrated=o.lab_calibrated) for s in order]
    return PredictionReport(predictor, o, paths, samples, probs, score, is_blast, positive,
                            setting, curve, results, skipped, rates, note)


def _bad_reason(path: Path) -> str:
    try:
        read_image(path)
    except BadFileError as exc:
        return exc.problem
    return "unreadable"
