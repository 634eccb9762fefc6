"""Applying saved models to new cells: per-cell calls and per-sample blast fractions.

Sources (`load_predictor`):
- a model file (`model.safetensors`, or the folder `leukolearn train --out` wrote);
- a RUN (a sweep's run directory): every fold model (and replicate) of one training size,
  the largest by default, averaged: the ensemble's blast probability is the mean of theirs.

Threshold: by the rules in `leukolearn.predict.threshold` (given, chosen for a target sensitivity
on a RUN's pooled test-fold predictions or stored in the model by `leukolearn calibrate`,
else 0.5).

Samples: each folder given holds one sample per subfolder (all images below it); images
lying directly in a given folder form the sample named after that folder; a file given on
its own belongs to its parent folder's sample. A CSV given instead is a manifest with a
`path` column (relative to the CSV's folder) and the sample in `sample_col`. Per sample:
the blast fraction, its Wilson interval and the diagnostic call (`leukolearn.predict.counts`);
where the classifier's error rates at the threshold are known from held-out labelled cells
(`leukolearn.predict.threshold.error_rates`) also the adjusted count, corrected for them, with its
interval, and the call is made on that (`raw_count` switches the correction off).

Outputs (`PredictionReport.write`): cells.csv, samples.csv, summary.json and, where the
threshold's calibration is known, the reliability diagram.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from leukolearn.analysis.calibration import ReliabilityCurve
from leukolearn.data.classes import positive_classes
from leukolearn.data.decode import fit_to_square, read_image
from leukolearn.errors import BadFileError, LeukolearnError
from leukolearn.files import write_csv, write_json
from leukolearn.model.cnn import PaperCNN
from leukolearn.model.weights import load_model
from leukolearn.progress import progress_bar
# Re-exported: these lived here before and callers import them from leukolearn.predict.predictor.
from leukolearn.predict.counts import (CONFIDENCE, DIAGNOSTIC_THRESHOLD, MIN_SEPARATION, ErrorRates, SampleResult, summarize_sample)
from leukolearn.predict.threshold import (ThresholdSetting, error_rates, is_run_dir, resolve_threshold, run_validation_predictions, stored_calibration)
from leukolearn.training.loop import predict_proba

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
MODEL_FILE = "model.safetensors"


def collect_image_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (hidden files skipped)."""
    return [p for p, _ in collect_samples(paths)]


def collect_samples(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """(image path, sample name) for files and folders, by the rule in the module docstring.
    Two different folders with the same name keep their full paths as sample names."""
    paths = [Path(p) for p in paths]
    found: list[tuple[Path, Path]] = []  # (image, sample folder)
    for path in paths:
        if path.is_dir():
            images = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            for p in images:
                rel = p.relative_to(path).parts
                found.append((p, path if len(rel) == 1 else path / rel[0]))
        elif path.exists():
            found.append((path, path.parent))
        else:
            raise LeukolearnError(f"{path}: no such file or folder")
    if not found:
        raise LeukolearnError(f"no images found in {', '.join(map(str, paths))}")
    folders = {folder for _, folder in found}
    by_name: dict[str, set[Path]] = {}
    for folder in folders:
        by_name.setdefault(_folder_name(folder), set()).add(folder)
    names = {f: (_folder_name(f) if len(by_name[_folder_name(f)]) == 1 else str(f)) for f in folders}
    return [(p, names[folder]) for p, folder in found]


def _folder_name(folder: Path) -> str:
    return folder.resolve().name or str(folder)


def read_sample_manifest(csv_path: Path, sample_col: str | None,
                         path_col: str = "path") -> list[tuple[Path, str]]:
    """(image path, sample) from a CSV; paths relative to the CSV's folder (or absolute).
    Without `sample_col` the whole CSV is one sample named after the file."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip(): c for c in reader.fieldnames or []}
        for needed in filter(None, (path_col, sample_col)):
            if needed not in columns:
                raise LeukolearnError(f"{csv_path}: no column {needed!r} (found {list(columns)})")
        out = []
        for k, row in enumerate(reader, start=2):
            rel = (row[columns[path_col]] or "").strip()
            if not rel:
                continue
            sample = (row[columns[sample_col]] or "").strip() if sample_col else csv_path.stem
            if not sample:
                raise LeukolearnError(f"{csv_path}, row {k}: empty {sample_col!r}")
            out.append((csv_path.parent / rel, sample))
    if not out:
        raise LeukolearnError(f"{csv_path}: lists no images")
    return out


# ---- models ------------------------------------------------------------------------------------
@dataclass
class Predictor:
    """One model or a RUN's fold ensemble, with what is known about its calibration."""

    models: list[PaperCNN]
    source: Path
    kind: str  # "model" | "run"
    size: int | None = None  # RUN: training size of the ensemble
    job_ids: list[str] = field(default_factory=list)
    _held_out: dict = field(default_factory=dict, repr=False)  # see held_out_predictions

    def held_out_predictions(self, positive: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """RUN: (is_positive, positive score) pooled over the test folds of the ensemble's
        size, read from the store once: the threshold and the error rates both use them."""
        key = tuple(positive)
        if key not in self._held_out:
            self._held_out[key] = run_validation_predictions(self.source, self.size, positive)
        return self._held_out[key]

    @property
    def config(self):
        return self.models[0].config

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def describe(self) -> dict:
        d = {"kind": self.kind, "path": str(self.source), "class_names": list(self.class_names),
             "input_size": self.config.input_size, "n_models": len(self.models)}
        if self.kind == "run":
            d.update(training_size=self.size, jobs=self.job_ids)
        return d


def load_predictor(path: str | Path, *, size: int | None = None) -> Predictor:
    """A model file, a `train --out` folder, or a RUN (ensemble at `size`, default largest)."""
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
            jobs = [r for r in with_weights if r.size == size]
            models = [load_model(store.weights_path(r.job_id)) for r in jobs]
        configs = {(m.config.input_size, m.config.class_names) for m in models}
        if len(configs) > 1:
            raise LeukolearnError(f"{path}: the models at size {size} disagree on input size "
                                  "or classes")
        return Predictor(models, path, "run", size, [r.job_id for r in jobs])
    if size is not None:
        raise LeukolearnError("--size applies to a RUN directory, not to a single model")
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    return Predictor([load_model(path)], path, "model")


def predict_paths(model: PaperCNN | Sequence[PaperCNN], paths: list[Path], batch_size: int = 64,
                  progress: bool = True, skip_bad: bool = False) -> np.ndarray:
    """Class probabilities (N, n_classes) for image files, decoded and fitted like training
    data; with several models, their mean. A file that cannot be decoded raises its
    BadFileError, or with `skip_bad` gets a row of NaN."""
    models = [model] if isinstance(model, PaperCNN) else list(model)
    size = models[0].config.input_size
    n_classes = models[0].config.n_classes
    out = np.full((len(paths), n_classes), np.nan, dtype=np.float32)
    with progress_bar(enabled=progress) as bar:  # transient: an error stays one line
        task = bar.add_task("predicting cells", total=len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images, rows = [], []
            for i, p in enumerate(chunk):
                try:
                    images.append(fit_to_square(read_image(p), size))
                    rows.append(start + i)
                except BadFileError:
                    if not skip_bad:
                        raise
            if images:
                batch = np.stack(images)  # (B, H, W, 3) uint8
                out[rows] = np.mean([predict_proba(m, batch, batch_size=batch_size)
                                     for m in models], axis=0)
            bar.advance(task, len(chunk))
    return out


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
                          "and FPR at their extreme corners",
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
            cells.append([str(path), sample, pred, int(blast), f"{s:.6f}", *[f"{v:.6f}" for v in p]])
        samples_header = ["sample", "n_cells", "n_blasts", "blast_fraction", "ci_low", "ci_high",
                          "above_threshold", "call", "adjusted_fraction", "adjusted_ci_low",
                          "adjusted_ci_high", "call_on"]
        samples = []
        for r in self.sample_results:
            samples.append([r.sample, r.n_cells, r.n_blasts, f"{r.blast_fraction:.4f}",
                            f"{r.ci_low:.4f}", f"{r.ci_high:.4f}", int(r.above_threshold), r.call,
                            *[_fmt(v) for v in (r.adjusted_fraction, r.adjusted_ci_low,
                                                r.adjusted_ci_high)], r.call_on])
        written = [write_csv(out_dir / "cells.csv", cells_header, cells),
                   write_csv(out_dir / "samples.csv", samples_header, samples),
                   write_json(out_dir / "summary.json", self.summary())]
        if self.calibration is not None and self.calibration.n:
            from leukolearn.report.analysis_figures import reliability_diagram
            from leukolearn.report.style import save_figure

            label = "Fold models" if self.predictor.kind == "run" else "Model"
            written += save_figure(reliability_diagram(self.calibration, label=label), out_dir,
                                   "reliability")
        return written


def predict_samples(source: str | Path, inputs: Sequence[str | Path], options: PredictOptions | None = None,
                    *, progress: bool = True) -> PredictionReport:
    """The whole `leukolearn predict`: load, group into samples, predict, threshold, count."""
    o = options or PredictOptions()
    if not 0 < o.diagnostic_threshold < 1:
        raise LeukolearnError(f"--diagnostic-threshold must be in (0, 1), got {o.diagnostic_threshold}")
    predictor = load_predictor(source, size=o.size)
    positive = positive_classes(predictor.class_names, o.positive)
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
    probs = predict_paths(predictor.models, paths, o.batch_size, progress, skip_bad=o.skip_bad)
    bad = np.isnan(probs).any(axis=1)
    skipped = [(paths[i], _bad_reason(paths[i])) for i in np.flatnonzero(bad)]
    keep = ~bad
    paths = [p for p, k in zip(paths, keep) if k]
    samples = [s for (_, s), k in zip(pairs, keep) if k]
    probs = probs[keep]
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
    results = [summarize_sample(s, is_blast[sample_arr == s], o.diagnostic_threshold, o.confidence,
                                rates) for s in order]
    return PredictionReport(predictor, o, paths, samples, probs, score, is_blast, positive,
                            setting, curve, results, skipped, rates, note)


def _fmt(v: float) -> str:
    """4 decimals; empty for NaN (no adjusted count)."""
    return "" if np.isnan(v) else f"{v:.4f}"


def _bad_reason(path: Path) -> str:
    try:
        read_image(path)
    except BadFileError as exc:
        return exc.problem
    return "unreadable"
