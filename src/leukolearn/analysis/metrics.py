"""Scores of one trained model on its test set, and what the metrics are called."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

# sklearn and scipy are imported where used: the labels below are wanted by modules (the
# CLI, the report) that should not pay a second for importing sklearn.metrics.

# A run's metric (SweepConfig.metric) as a reader sees it, in running text ("test weighted
# F1"); `metric_label` gives the capitalised form for an axis or a figure's table.
METRIC_LABELS = {"auc": "ROC-AUC", "weighted_f1": "weighted F1"}
# The metrics a sweep can score (SweepConfig.metric): the one list, kept with their names.
METRICS = tuple(METRIC_LABELS)


def chance_level(name: str) -> float | None:
    """What metric `name` scores for a network that guesses, for a figure's reference line:
    0.5 for ROC-AUC; None for weighted F1, whose chance level depends on the class counts."""
    return 0.5 if name == "auc" else None


def metric_label(name: str, capital: bool = True) -> str:
    """The display name of metric `name` ("auc" -> "ROC-AUC", "weighted_f1" -> "Weighted
    F1", or "weighted F1" without `capital`); a name without one is returned as it is."""
    label = METRIC_LABELS.get(name)
    if label is None:
        return name
    return label[:1].upper() + label[1:] if capital else label


def roc_auc(y_true: np.ndarray, p_positive: np.ndarray) -> float:
    """ROC-AUC, or NaN when the labels hold one class only (AUC is undefined then).

    The paper's script integrated 1,000 thresholds; the exact area differs from that by
    less than 1/1000 of the curve's step size, so we use the exact one.
    """
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, p_positive))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 averaged over classes weighted by their support, as in the paper's multiclass task."""
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def score(metric: str, y_true: np.ndarray, probs: np.ndarray) -> float:
    """A run's metric of class probabilities (N, n_classes): ROC-AUC of class 1, or the
    weighted F1 of the most probable class."""
    if metric == "auc":
        return roc_auc(y_true, probs[:, 1])
    return weighted_f1(y_true, np.asarray(probs).argmax(axis=1))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): rows are true classes, columns predicted."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (Wilson 1927; Newcombe 1998, method 3):
    scipy's `binomtest(k, n).proportion_ci(method="wilson")`, whose bounds are exactly 0 at
    k == 0 and exactly 1 at k == n.

    Unlike the Wald interval it stays inside [0, 1] and keeps its coverage near 0 and 1,
    which is where blast fractions of healthy samples sit. (nan, nan) when n == 0 (a sample
    without cells: scipy refuses n == 0, a count reports it as unknown).
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def roc_auc_by_ranks(y_true: np.ndarray, score: np.ndarray) -> float:
    """`roc_auc`'s value by ranks (Mann-Whitney U, ties counted half), about 50x faster than
    scikit-learn's: the statistic of a bootstrap's thousands of resamples. NaN with one
    class; `y_true` 1 (or True) is positive."""
    from scipy.stats import rankdata

    positive = np.asarray(y_true) == 1
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def weighted_f1_by_counts(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """`weighted_f1`'s value (scikit-learn's, zero_division 0) from the confusion counts,
    for a bootstrap's resamples. Classes without true cells weigh nothing, so the classes
    seen in the two arrays are enough."""
    y, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if not len(y):
        return math.nan
    n = int(max(y.max(), pred.max())) + 1
    table = np.bincount(y * n + pred, minlength=n * n).reshape(n, n)
    support, predicted, hits = table.sum(1), table.sum(0), np.diag(table)
    denominator = support + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros(n), where=denominator > 0)
    return float((f1 * support).sum() / support.sum())


def stratified_bootstrap_ci(statistic: Callable[..., float], y: np.ndarray, *columns: np.ndarray,
                            n_resamples: int = 2000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `statistic(y, *columns)` over `n_resamples` resamples of the
    rows that keep every class's count (a stratified bootstrap); (nan, nan) when no
    resample gives a finite value.

    Written here because scipy.stats.bootstrap resamples rows regardless of class: a
    resample of a test set with 5 blasts then often holds none and has no AUC, and the
    interval would describe other class balances than the one measured. Stratifying by
    class is what pROC does for the AUC (Robin et al., BMC Bioinformatics 2011).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    values = np.full(n_resamples, np.nan)
    for b in range(n_resamples):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        values[b] = statistic(y[idx], *(np.asarray(c)[idx] for c in columns))
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)
