"""Scores of one trained model on its test set."""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score


def roc_auc(y_true: np.ndarray, p_positive: np.ndarray) -> float:
    """ROC-AUC, or NaN when the labels hold one class only (AUC is undefined then).

    The paper's script integrated 1,000 thresholds; the exact area differs from that by
    less than 1/1000 of the curve's step size, so we use the exact one.
    """
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, p_positive))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 averaged over classes weighted by their support, as in the paper's multiclass task."""
    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes): rows are true classes, columns predicted."""
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
    from scipy.stats import binomtest  # scipy.stats takes ~0.3 s to import: only when used

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
