"""Which blast-probability threshold a prediction uses, and on what it was chosen.

The arithmetic (the highest cut-off with sensitivity >= a target, the reliability curve)
is `leukolearn.analysis.calibration`'s; this module decides *which* predictions it runs on and
stores the result in a model (`calibrate_models`, for `leukolearn calibrate`).

Threshold (`resolve_threshold`), first that applies:
1. `threshold` given: used as is.
2. `target_sensitivity` given, RUN: chosen on the pooled *test* predictions of the size's
   fold models. The store keeps each job's test predictions, not its validation ones (the
   validation images would have to be reloaded and re-predicted); the pooled test folds
   are out-of-sample for the model that made each prediction, which is what choosing a
   threshold needs. The sensitivity reported at that threshold is measured on the same
   cells, so it is not an independent estimate, and the ensemble (mean of all folds) is
   somewhat more confident than the single fold models the threshold was chosen on.
3. `target_sensitivity` given, model file: refused unless the model carries a threshold
   chosen for that target by `calibrate_models` (`leukolearn calibrate`), which stores it
   with its calibration in `ModelConfig.extra`; by default on the validation images of the
   model's split (`held_out_ids`: the `split.json` that `leukolearn train` wrote beside the
   model, or the run store of a sweep's `RUN/weights/<job>.safetensors`).
4. a threshold stored in the model (`calibrate_models`);
5. 0.5.

Error rates at the threshold in use (`error_rates`), for the adjusted count of
`leukolearn.predict.counts` (TPR and FPR of single cells, measured on held-out labelled cells
and only where such cells exist), first that applies:
1. RUN: the pooled test-fold predictions of the size's fold models (those the threshold is
   chosen on), cut at the threshold in use. The ensemble (mean of the folds) is applied to
   the new cells but the rates are those of its single fold models; it is usually at least
   as good, so the correction is, if anything, slightly too strong.
2. a sweep's RUN/weights/<job>.safetensors: that job's stored test predictions.
3. a model calibrated by `leukolearn calibrate`, used at its stored threshold: the
   sensitivity and specificity stored with it (measured on the cells the threshold was
   chosen on, so the sensitivity is slightly optimistic).
4. none: no correction (a model from `leukolearn train` keeps its split but not its held-out
   predictions: calibrate it to get them).
The correction assumes the classifier's TPR and FPR on a new sample are those measured here:
the samples may hold more or fewer blasts than these cells, but their cells must look the
same (same staining, scanner, cell types); otherwise no count from this model is reliable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from leukolearn.analysis.calibration import (ReliabilityCurve, ThresholdChoice, choose_threshold, reliability_curve)
from leukolearn.data.classes import (BLAST, JOIN, NEGATIVE, POSITIVE_KEY, negative_label, positive_classes, positive_label)
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import PaperCNN
from leukolearn.predict.counts import ErrorRates
from leukolearn.training.loop import predict_proba


class Predictor(Protocol):
    """What these rules read of a `leukolearn.predict.predictor.Predictor`, not imported
    from there: predictor imports this module, and no two modules import each other
    (tests/test_layout.py)."""

    models: list[PaperCNN]
    source: Path
    kind: str  # "model" | "run"
    size: int | None

    @property
    def class_names(self) -> tuple[str, ...]: ...

    def held_out_predictions(self, positive: Sequence[int]) -> tuple[np.ndarray, np.ndarray]: ...


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run directory of `leukolearn sweep` (a RUN)."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file() \
        and (Path(path) / "run.sqlite").is_file()


@dataclass(frozen=True)
class ThresholdSetting:
    value: float
    how: str  # in words, for summary.json
    choice: ThresholdChoice | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "how": self.how,
                "choice": None if self.choice is None else self.choice.to_dict()}


def run_validation_predictions(run: Path, job_ids: Sequence[str], positive: Sequence[int]
                               ) -> tuple[np.ndarray, np.ndarray]:
    """(is_positive labels, positive score) pooled over the test sets of the jobs `job_ids`."""
    from leukolearn.runstore.store import RunStore

    ys, ps = [], []
    wanted = set(job_ids)
    with RunStore.open(run) as store:
        for r in store.results():
            if r.job_id in wanted and r.weights:
                pred = store.predictions(r.job_id)
                ys.append(np.isin(pred.labels, positive))
                ps.append(pred.probs[:, positive].sum(axis=1))
    return np.concatenate(ys), np.clip(np.concatenate(ps), 0, 1)


def held_out_ids(model_file: Path, part: str) -> tuple[set[str], str]:
    """The image ids of `part` ("val" or "test") of the split a model file was trained on,
    and where they were read: the split.json `leukolearn train` wrote beside it, or, for a
    sweep's RUN/weights/<job>.safetensors, that job's row in the run store."""
    import json

    split_file = model_file.parent / "split.json"
    if split_file.is_file():
        ids, where = set(json.loads(split_file.read_text()).get(part, [])), str(split_file)
    elif (job := sweep_job(model_file)) is not None:
        from leukolearn.runstore.store import RunStore

        run, job_id = job
        with RunStore.open(run) as store:
            train, val, test = store.split(job_id)
            names = store.image_ids()
        ids = {names[i] for i in {"val": val, "test": test}.get(part, [])}
        where = f"job {job_id} of run {run}"
    else:
        raise LeukolearnError(f"--part {part}: no split.json beside {model_file}, and it is not "
                              "the weights file of a finished sweep job; use --part all with "
                              "images the model was not trained on")
    if not ids:
        raise LeukolearnError(f"{where} lists no {part!r} images")
    return ids, where


def calibration_rows(cells, model_names: Sequence[str], model_file: Path, part: str,
                     root: str | Path) -> tuple[np.ndarray, str]:
    """The images of `cells` (loaded from `root`) to calibrate the model `model_file` on,
    as indices, and a description of them: all of them for `part` "all", else those of
    the model's "val" or "test" part (`held_out_ids`), every one of which must be there.
    Refuses cells whose classes are not the model's (`model_names`)."""
    if as_model_classes(cells.class_names, model_names) != tuple(model_names):
        raise LeukolearnError(f"the dataset's classes {list(cells.class_names)} are not the "
                              f"model's {list(model_names)}")
    if part == "all":
        return np.arange(len(cells)), f"all {len(cells)} images of {root}"
    wanted, where = held_out_ids(model_file, part)
    idx = np.array([i for i, image_id in enumerate(cells.image_ids) if image_id in wanted],
                   dtype=np.int64)
    if len(idx) < len(wanted):
        raise LeukolearnError(f"{len(wanted) - len(idx)} of the {part} images of {where} "
                              f"are not in {root}")
    return idx, f"the {len(idx)} {part} images of {where}"


def stored_calibration(model: PaperCNN) -> dict | None:
    return model.config.extra.get("calibration")


def recorded_positive(model: PaperCNN) -> list[str] | None:
    """The positive classes a model file records, if it does: ModelConfig.extra's
    `POSITIVE_KEY`, else those it was calibrated with (`calibrate_models` stores both)."""
    extra = model.config.extra
    recorded = extra.get(POSITIVE_KEY) or (extra.get("calibration") or {}).get("positive")
    return list(recorded) if recorded else None


def model_positive(model: PaperCNN, positive: Sequence[str] | None = None) -> list[int]:
    """Indices of `model`'s positive classes: `positive` if given, else what it records,
    else by its class names (`data.classes.positive_classes`, which refuses to guess)."""
    return positive_classes(model.config.class_names, positive, recorded_positive(model))


def positive_name(class_names: Sequence[str], positive: Sequence[int]) -> str:
    """The positive class in words, for labels: "blast", "ig", "MYO+MOB"."""
    return JOIN.join(class_names[i] for i in positive)


def calibration_classes(model_names: Sequence[str], layout: str,
                        named: Sequence[str] | None) -> tuple[bool, list[str] | None]:
    """How `leukolearn calibrate` reads its labelled images for a model with classes
    `model_names`: (multiclass, the positive classes for `calibrate_models`).

    `named` (its --positive) makes a binary task (("other", "ig")) like the one the model
    was trained on; but where the model itself has the classes named and is not that
    binary task (a multiclass model, or two classes such as "lymphocyte", "neutrophil"
    that do not say which is positive), the images keep their classes (multiclass) and
    `named` says which to count. Without `named`, as the model was trained: binary (the
    layout's default) for two classes."""
    if not named:
        return len(model_names) > 2, None
    label = positive_label(layout, named)
    if tuple(model_names) != (negative_label(label), label) and set(named) <= set(model_names):
        return True, list(named)
    return False, None


def as_model_classes(names: Sequence[str], model_names: Sequence[str]) -> tuple[str, ...]:
    """`names` (a binary task as loaded now, ("other", "ig")) as a model made by an earlier
    version names the same task: every binary task was ("other", "blast") then."""
    if len(names) == 2 and tuple(model_names) == (NEGATIVE, BLAST) and names[0] == NEGATIVE:
        return tuple(model_names)
    return tuple(names)


def calibrate_models(models: Sequence[PaperCNN], images: np.ndarray, labels: np.ndarray,
                     target_sensitivity: float, *, positive: Sequence[str] | None = None,
                     source: str = "", n_bins: int = 10) -> list[PaperCNN]:
    """Copies of a model file's networks (one, or an ensemble's) whose ModelConfig.extra
    holds a threshold for `target_sensitivity` chosen on these labelled images (held out
    from training!) and their reliability curve. An ensemble is scored as `predict` scores
    it, by the mean of its networks' probabilities, and each network stores the same
    calibration (beside its own domain check). `models` are left as they were."""
    pos = model_positive(models[0], positive)
    probs = np.mean([predict_proba(m, images) for m in models], axis=0)
    score = np.clip(probs[:, pos].sum(axis=1), 0, 1)
    y = np.isin(labels, pos)
    choice = choose_threshold(y, score, target_sensitivity, source=source)
    curve = reliability_curve(y, score, n_bins)
    names = [models[0].config.class_names[i] for i in pos]
    # POSITIVE_KEY as well: the calibrated file then says which class it counts, and
    # `predict` needs no --positive for it (even for a model whose names do not say).
    calibration = {POSITIVE_KEY: names, "threshold": choice.threshold,
                   "calibration": {"positive": names, "threshold": choice.to_dict(),
                                   "reliability": curve.to_dict(), "source": source}}
    calibrated = []
    for model in models:
        copy = PaperCNN(replace(model.config, extra={**model.config.extra, **calibration}))
        copy.load_state_dict(model.state_dict())
        calibrated.append(copy.eval())
    return calibrated


def resolve_threshold(predictor: Predictor, positive: Sequence[int], *,
                      threshold: float | None = None, target_sensitivity: float | None = None
                      ) -> tuple[ThresholdSetting, ReliabilityCurve | None]:
    """The threshold by the rules of the module docstring, and the calibration curve of the
    predictions it was (or could have been) chosen on, if there are any."""
    if threshold is not None and not 0 <= threshold <= 1:
        raise LeukolearnError(f"--threshold must be in [0, 1], got {threshold}")
    curve = None
    choice = None
    if predictor.kind == "run":
        y, score = predictor.held_out_predictions(positive)
        curve = reliability_curve(y, score)
        if threshold is None and target_sensitivity is not None:
            source = (f"pooled test-fold predictions of the {len(predictor.models)} single fold "
                      f"models at training size {predictor.size} ({len(y)} cells)")
            choice = choose_threshold(y, score, target_sensitivity, source=source)
    else:
        stored = stored_calibration(predictor.models[0])
        if stored is not None:
            curve = ReliabilityCurve.from_dict(stored["reliability"])
            choice = ThresholdChoice(**stored["threshold"])
            if threshold is None and target_sensitivity is not None and \
                    not math.isclose(choice.target_sensitivity, target_sensitivity):
                raise LeukolearnError(
                    f"{predictor.source}: its threshold was chosen for sensitivity "
                    f"{choice.target_sensitivity:g}, not {target_sensitivity:g}; run "
                    "`leukolearn calibrate` again with that target, or give --threshold")
        elif threshold is None and target_sensitivity is not None:
            raise LeukolearnError(
                f"{predictor.source}: a single model holds no validation predictions to choose "
                "a threshold on; run `leukolearn calibrate` on it first, or give --threshold")
    if threshold is not None:
        return ThresholdSetting(float(threshold), "given (--threshold)"), curve
    if choice is not None:
        how = (f"highest threshold with sensitivity >= {choice.target_sensitivity:g} on "
               f"{choice.source or 'held-out labelled cells'}")
        return ThresholdSetting(choice.threshold, how, choice), curve
    return ThresholdSetting(0.5, "default 0.5"), curve


def rates_at(y_true: np.ndarray, score: np.ndarray, threshold: float, source: str
             ) -> ErrorRates | None:
    """TPR and FPR of `score >= threshold` on labelled cells; None without both classes."""
    y = np.asarray(y_true).astype(bool).ravel()
    called = np.asarray(score, dtype=float).ravel() >= threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return None
    return ErrorRates(float(called[y].mean()), float(called[~y].mean()), n_pos, n_neg, source)


def sweep_job(model_file: Path) -> tuple[Path, str] | None:
    """(RUN, job id) when `model_file` is the weights file of a finished job of a sweep."""
    from leukolearn.runstore.store import RunStore

    run = model_file.parent.parent
    if model_file.parent.name != "weights" or not is_run_dir(run):
        return None
    job_id = model_file.name.removesuffix(".safetensors")
    with RunStore.open(run) as store:
        if job_id not in store.finished_ids():
            return None
        weights = store.weights_path(job_id)
    if weights is None or weights.resolve() != model_file.resolve():
        return None
    return run, job_id


def error_rates(predictor: Predictor, positive: Sequence[int], threshold: float
                ) -> tuple[ErrorRates | None, str]:
    """TPR and FPR at `threshold` by the rules of the module docstring, and a note: where
    they come from, or why there are none."""
    names = [predictor.class_names[i] for i in positive]
    if predictor.kind == "run":
        y, score = predictor.held_out_predictions(positive)
        source = (f"pooled test-fold predictions of the {len(predictor.models)} single fold "
                  f"models at training size {predictor.size}")
        rates = rates_at(y, score, threshold, source)
        return rates, source if rates else f"{source} lack {' or '.join(names)} or other cells"
    job = sweep_job(Path(predictor.source))
    if job is not None:
        from leukolearn.runstore.store import RunStore

        run, job_id = job
        with RunStore.open(run) as store:
            pred = store.predictions(job_id)
        source = f"test predictions of job {job_id} of run {run}"
        rates = rates_at(np.isin(pred.labels, positive),
                         np.clip(pred.probs[:, positive].sum(axis=1), 0, 1), threshold, source)
        return rates, source if rates else f"the {source} lack {' or '.join(names)} or other cells"
    stored = stored_calibration(predictor.models[0])
    if stored is None:
        return None, ("no held-out labelled predictions for this model (give a RUN or a sweep's "
                      "weights file, or run `leukolearn calibrate` on it)")
    choice = ThresholdChoice(**stored["threshold"])
    if list(stored.get("positive", names)) != names:
        return None, (f"the model was calibrated with positive classes {stored['positive']}, "
                      f"not {names}")
    if not math.isclose(threshold, choice.threshold, rel_tol=0, abs_tol=1e-9):
        return None, (f"its error rates are known at its calibrated threshold "
                      f"{choice.threshold:.4g} only, not at {threshold:.4g}")
    if choice.specificity is None or math.isnan(choice.specificity) or not choice.n_positive:
        return None, f"its calibration cells lack {' or '.join(names)} or other cells"
    source = (f"sensitivity and specificity stored by `leukolearn calibrate` "
              f"({stored.get('source') or choice.source or 'held-out labelled cells'})")
    return ErrorRates(float(choice.sensitivity), 1.0 - float(choice.specificity),
                      int(choice.n_positive), int(choice.n_negative), source), source
