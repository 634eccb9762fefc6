"""Learning curves: how many annotated images a target score takes.

The test metric of a sweep as a function of the training size n is fitted with an inverse
power law (Figueroa et al. 2012, "Predicting sample size required for classification
performance"):

    metric(n) = a - b * n^(-c),   a in (0, 1] (the plateau), b > 0, c > 0

The target is reached at n* = (b / (a - target))^(1/c) when a > target; when a <= target
the curve plateaus below it and no number of images of this kind is predicted to reach it.

Uncertainty comes from the folds: each fold's curve is fitted on its own (reported), and
the folds are bootstrapped (drawn with replacement, `n_boot` times, seeded), the mean curve
of each draw refitted, and n* read off each refit; the interval is the percentiles of those
n* (an infinite n* is a draw whose plateau lies below the target).

`--validate-at 200 --fit-max 100` fits on the sizes <= 100 only and compares the prediction
at 200 with what was measured there: the honest check of an extrapolation.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from leukolearn.analysis.metrics import metric_label
from leukolearn.errors import LeukolearnError
from leukolearn.files import json_safe

# a in (0, 1], b > 0, c > 0; the upper bounds on b and c only keep the optimiser in a
# region where the curve is defined on n >= 1 and not a step function.
LOWER = (1e-6, 1e-9, 1e-3)
UPPER = (1.0, 1e3, 5.0)
N_BOOT = 1000  # bootstrap resamples of the folds (`plan --n-boot`)
CONFIDENCE = 0.95  # of the interval on n* (`plan --confidence`)
TARGET = 0.95  # the report's learning-curve target: "how many images for AUC 0.95"


def inverse_power_law(n: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(np.asarray(n, dtype=float), -c)


@dataclass(frozen=True)
class CurveFit:
    a: float
    b: float
    c: float

    def __call__(self, n: np.ndarray | float) -> np.ndarray:
        return inverse_power_law(n, self.a, self.b, self.c)

    def size_for(self, target: float) -> float:
        """Training images needed for `target`; inf when the plateau a <= target."""
        if self.a <= target:
            return math.inf
        return float(max((self.b / (self.a - target)) ** (1 / self.c), 1.0))

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c}


def fit_inverse_power_law(sizes: Sequence[float], values: Sequence[float]) -> CurveFit:
    """Least-squares fit of a - b n^-c; NaN values are ignored. Needs >= 3 sizes.

    Raises LeukolearnError when there are too few points and RuntimeError when the
    optimiser does not converge.
    """
    from scipy.optimize import curve_fit

    n = np.asarray(sizes, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(y)
    n, y = n[ok], y[ok]
    if len(np.unique(n)) < 3:
        raise LeukolearnError(f"a learning curve needs at least 3 training sizes with results, "
                              f"got {len(np.unique(n))}")
    a0 = float(np.clip(y.max() + 0.01, LOWER[0] * 2, UPPER[0]))
    c0 = 0.5
    b0 = float(np.clip((a0 - y.min()) * n.min() ** c0, 1e-3, UPPER[1] / 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OptimizeWarning for exactly determined fits
        params, _ = curve_fit(inverse_power_law, n, y, p0=(a0, b0, c0), bounds=(LOWER, UPPER),
                              maxfev=20000)
    return CurveFit(*(float(v) for v in params))


def metric_table(records: Iterable, *, without_dead: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(sizes, folds, values (n_sizes, n_folds), metric name) from a store's JobRecords;
    replicates of a (size, fold) are averaged; NaN where nothing finished.

    without_dead: leave out dead networks (constant predictions, `degenerate`): they
    failed to train, which `--restarts` mends, and say nothing of how many images are
    needed; a few of them pull a mean curve down at random sizes."""
    done = [r for r in records if r.status == "done" and not (without_dead and r.degenerate)]
    if not done:
        raise LeukolearnError("the run has no finished jobs yet")
    sizes = np.array(sorted({r.size for r in done}))
    folds = np.array(sorted({r.fold for r in done}))
    total = np.zeros((len(sizes), len(folds)))
    count = np.zeros_like(total)
    for r in done:
        if np.isfinite(r.metric):
            i, j = np.searchsorted(sizes, r.size), np.searchsorted(folds, r.fold)
            total[i, j] += r.metric
            count[i, j] += 1
    with np.errstate(invalid="ignore"):
        values = total / count
    name = next((r.metric_name for r in done if r.metric_name), "metric")
    return sizes, folds, values, name


@dataclass
class Validation:
    fit_max: int
    at: int
    measured: float  # mean over folds at `at`
    measured_sd: float
    predicted: float
    predicted_ci: tuple[float, float]

    @property
    def error(self) -> float:
        """predicted - measured."""
        return self.predicted - self.measured


@dataclass
class LearningCurvePlan:
    metric_name: str
    target: float
    confidence: float
    n_boot: int
    seed: int
    sizes: np.ndarray  # (n_sizes,) every measured size
    values: np.ndarray  # (n_sizes, n_folds) metric per size and fold
    fit_sizes: np.ndarray  # the sizes the fit used (<= fit_max)
    fit: CurveFit  # on the mean over folds
    fold_fits: list[CurveFit | None]  # per fold; None where the fit failed
    boot: np.ndarray  # (n_boot, 3) a, b, c per bootstrap refit; NaN rows failed
    n_needed: float  # inf: plateau below the target
    n_ci: tuple[float, float]
    a_ci: tuple[float, float]
    validation: Validation | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def plateau(self) -> bool:
        return self.fit.a <= self.target

    @property
    def p_plateau(self) -> float:
        """Share of bootstrap refits whose plateau lies at or below the target."""
        a = self.boot[:, 0]
        a = a[np.isfinite(a)]
        return float(np.mean(a <= self.target)) if len(a) else math.nan

    @property
    def mean(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.values, axis=1)

    @property
    def reached_at(self) -> int | None:
        """The smallest measured size whose mean already meets the target."""
        hit = self.sizes[self.mean >= self.target]
        return int(hit[0]) if len(hit) else None

    def band(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the bootstrap curves on `grid`."""
        ok = np.isfinite(self.boot).all(axis=1)
        curves = np.array([inverse_power_law(grid, *p) for p in self.boot[ok]])
        if not len(curves):
            return self.fit(grid), self.fit(grid)
        alpha = 1 - self.confidence
        return (np.quantile(curves, alpha / 2, axis=0), np.quantile(curves, 1 - alpha / 2, axis=0))

    def to_dict(self) -> dict:
        """For JSON: NaN and inf (n* of a plateau below the target, a missing fold) as None."""
        d = {
            "metric": self.metric_name, "target": self.target, "confidence": self.confidence,
            "n_boot": self.n_boot, "seed": self.seed, "model": "a - b * n^(-c)",
            "fit": self.fit.to_dict(), "plateau": self.plateau,
            "p_plateau_below_target": self.p_plateau, "a_ci": self.a_ci,
            "n_needed": self.n_needed, "n_ci": self.n_ci,
            "reached_at_measured_size": self.reached_at,
            "sizes": self.sizes, "fit_sizes": self.fit_sizes, "mean": self.mean,
            "per_fold": self.values,
            "fold_fits": [None if f is None else f.to_dict() for f in self.fold_fits],
            "notes": self.notes,
        }
        if self.validation is not None:
            v = self.validation
            d["validation"] = {"fit_max": v.fit_max, "at": v.at, "measured": v.measured,
                               "measured_sd": v.measured_sd, "predicted": v.predicted,
                               "predicted_ci": v.predicted_ci, "error": v.error}
        return json_safe(d)

    def text(self) -> str:
        # "AUC", not metric_label's "ROC-AUC": the plan's printed text stays as it was (the
        # formula line is long enough); every other metric is named as everywhere else.
        name = "AUC" if self.metric_name == "auc" else metric_label(self.metric_name,
                                                                     capital=False)
        pct = f"{self.confidence:.0%}"
        f = self.fit
        lines = [
            f"{name}(n) = {f.a:.3f} - {f.b:.3g} * n^-{f.c:.3g}, fitted on the mean of "
            f"{self.values.shape[1]} folds at sizes {', '.join(map(str, self.fit_sizes.tolist()))}",
        ]
        if self.plateau:
            lines.append(
                f"target {name} {self.target:g}: not reached; the curve plateaus at {f.a:.3f} "
                f"({pct} CI {self.a_ci[0]:.3f} to {self.a_ci[1]:.3f}). In "
                f"{1 - self.p_plateau:.0%} of {self.n_boot} fold resamples the plateau lies "
                "above the target.")
        else:
            low, high = (_fmt_n(v) for v in self.n_ci)
            lines.append(
                f"target {name} {self.target:g}: about {_fmt_n(self.n_needed)} training images "
                f"({pct} CI {low} to {high}; bootstrap over folds, {self.n_boot} resamples, "
                f"seed {self.seed})")
            if self.n_needed > self.sizes.max():
                lines.append(f"  an extrapolation beyond the largest measured size "
                             f"({int(self.sizes.max())})")
        if self.reached_at is not None:
            lines.append(f"  measured: the mean already reaches it at n = {self.reached_at}")
        if self.validation is not None:
            v = self.validation
            lines.append(
                f"validation: fitted on sizes <= {v.fit_max}, predicted {name} at n = {v.at}: "
                f"{v.predicted:.3f} ({pct} CI {v.predicted_ci[0]:.3f} to "
                f"{v.predicted_ci[1]:.3f}); measured {v.measured:.3f} ± {v.measured_sd:.3f} "
                f"(s.d. over folds); error {v.error:+.3f}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt_n(v: float) -> str:
    return "unbounded (plateau below target)" if not math.isfinite(v) else f"{math.ceil(v):,}"


def plan_annotation(sizes: np.ndarray, values: np.ndarray, target: float, *,
                    metric_name: str = "auc", fit_max: int | None = None,
                    validate_at: int | None = None, n_boot: int = N_BOOT, seed: int = 0,
                    confidence: float = CONFIDENCE) -> LearningCurvePlan:
    """Fit the learning curve of `values` (n_sizes, n_folds) and answer how many training
    images reach `target`. See the module docstring for the method."""
    sizes = np.asarray(sizes)
    values = np.asarray(values, dtype=float)
    if values.shape[0] != len(sizes):
        raise ValueError(f"{len(sizes)} sizes but values of shape {values.shape}")
    if not 0 < target <= 1:
        raise LeukolearnError(f"target must be in (0, 1], got {target}")
    if not 0 < confidence < 1:
        raise LeukolearnError(f"confidence must be in (0, 1), got {confidence}")
    use = np.ones(len(sizes), bool) if fit_max is None else sizes <= fit_max
    if validate_at is not None:
        if validate_at not in sizes:
            raise LeukolearnError(f"--validate-at {validate_at}: no results at that size "
                                  f"(measured: {', '.join(map(str, sizes.tolist()))})")
        if fit_max is None:
            use &= sizes < validate_at
        elif validate_at <= fit_max:
            raise LeukolearnError(f"--validate-at {validate_at} must be above --fit-max {fit_max}")
    fit_sizes, fit_values = sizes[use], values[use]
    has_data = np.isfinite(fit_values).any(axis=1)
    fit_sizes, fit_values = fit_sizes[has_data], fit_values[has_data]
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        fit = fit_inverse_power_law(fit_sizes, np.nanmean(fit_values, axis=1))
        fold_fits = []
        for j in range(fit_values.shape[1]):
            try:
                fold_fits.append(fit_inverse_power_law(fit_sizes, fit_values[:, j]))
            except (RuntimeError, LeukolearnError):
                fold_fits.append(None)
        rng = np.random.default_rng(seed)
        n_folds = fit_values.shape[1]
        boot = np.full((n_boot, 3), np.nan)
        for i in range(n_boot):
            draw = fit_values[:, rng.integers(0, n_folds, n_folds)]
            try:
                refit = fit_inverse_power_law(fit_sizes, np.nanmean(draw, axis=1))
                boot[i] = (refit.a, refit.b, refit.c)
            except (RuntimeError, LeukolearnError):
                pass
    if n_folds < 5:
        notes.append(f"only {n_folds} folds: the bootstrap interval is rough")
    failed = int((~np.isfinite(boot).all(axis=1)).sum())
    if failed:
        notes.append(f"{failed} of {n_boot} bootstrap refits failed and were left out")
    ok = boot[np.isfinite(boot).all(axis=1)]
    alpha = 1 - confidence
    n_boot_needed = np.array([CurveFit(*p).size_for(target) for p in ok])
    n_ci = _quantiles(n_boot_needed, alpha)
    a_ci = _quantiles(ok[:, 0], alpha)
    plan = LearningCurvePlan(
        metric_name=metric_name, target=target, confidence=confidence, n_boot=n_boot, seed=seed,
        sizes=sizes, values=values, fit_sizes=fit_sizes, fit=fit, fold_fits=fold_fits, boot=boot,
        n_needed=fit.size_for(target), n_ci=n_ci, a_ci=a_ci, notes=notes,
    )
    if validate_at is not None:
        row = values[list(sizes).index(validate_at)]
        row = row[np.isfinite(row)]
        pred_boot = np.array([inverse_power_law(validate_at, *p) for p in ok])
        plan.validation = Validation(
            fit_max=int(fit_sizes.max()), at=int(validate_at), measured=float(row.mean()),
            measured_sd=float(row.std(ddof=1)) if len(row) > 1 else math.nan,
            predicted=float(fit(validate_at)), predicted_ci=_quantiles(pred_boot, alpha),
        )
    return plan


def _quantiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval that picks sample values (numpy's "inverted_cdf", Hyndman & Fan
    type 1: no interpolation), so an infinite n* (a plateau below the target) stays inf
    instead of turning into NaN."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return math.nan, math.nan
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(low), float(high)


def plan_from_store(run: str | Path, target: float, *, without_dead: bool = False,
                    **kwargs) -> LearningCurvePlan:
    """`plan_annotation` on a run directory's finished jobs (test metric per fold and size)."""
    sizes, _folds, values, name = run_metric_table(run, without_dead=without_dead)
    return plan_annotation(sizes, values, target, metric_name=name, **kwargs)


def run_metric_table(run: str | Path, *, without_dead: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """`metric_table` of a run directory, as it is scored (an ensemble run by its ensembles)."""
    from leukolearn.analysis.ensemble import scored_run
    from leukolearn.runstore.store import RunStore

    with RunStore.open(run) as store:
        return metric_table(scored_run(store).results(), without_dead=without_dead)


