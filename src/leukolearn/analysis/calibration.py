"""How far predicted blast probabilities can be trusted, and where to cut them.

- `reliability_curve`: predictions binned on [0, 1] (equal-width bins), per bin the mean
  predicted probability against the observed fraction of positives; its count-weighted
  mean gap is the expected calibration error (ECE, Naeini et al. 2015; Guo et al. 2017).
- `choose_threshold`: the highest cut-off that still calls at least the target fraction of
  the positive cells positive, i.e. the most specific threshold with sensitivity >= target.
- `reliability_diagram`: the curve as a figure (no pyplot state), in the style of
  `leukolearn.report.figures`.

Everything works on the *positive score*: the blast probability of a binary model, or the
summed probability of the positive classes of a multiclass one. A cell is called positive
when its score is >= the threshold.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from leukolearn.errors import LeukolearnError
from leukolearn.files import json_safe


@dataclass(frozen=True)
class ReliabilityCurve:
    bin_edges: np.ndarray  # (n_bins + 1,) from 0 to 1
    counts: np.ndarray  # (n_bins,) predictions per bin
    mean_predicted: np.ndarray  # (n_bins,) NaN where a bin is empty
    observed: np.ndarray  # (n_bins,) fraction of positives, NaN where a bin is empty
    brier: float  # mean squared error of the probabilities

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of (count / n) * |observed - predicted|."""
        filled = self.counts > 0
        if not filled.any():
            return math.nan
        gaps = np.abs(self.observed[filled] - self.mean_predicted[filled])
        return float(np.sum(self.counts[filled] / self.n * gaps))

    @property
    def mce(self) -> float:
        """Maximum calibration error: the largest gap of a non-empty bin."""
        filled = self.counts > 0
        gaps = np.abs(self.observed[filled] - self.mean_predicted[filled])
        return float(gaps.max()) if filled.any() else math.nan

    def to_dict(self) -> dict:
        """For JSON: NaN (an empty bin; ECE, MCE and Brier score without predictions) as None."""
        return json_safe({"n": self.n, "ece": self.ece, "mce": self.mce, "brier": self.brier,
                          "bin_edges": self.bin_edges, "counts": self.counts,
                          "mean_predicted": self.mean_predicted, "observed": self.observed})

    @classmethod
    def from_dict(cls, d: dict) -> "ReliabilityCurve":
        def arr(key: str) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in d[key]], dtype=float)

        brier = math.nan if d["brier"] is None else float(d["brier"])
        return cls(arr("bin_edges"), np.asarray(d["counts"], dtype=np.int64),
                   arr("mean_predicted"), arr("observed"), brier)


def reliability_curve(y_true: np.ndarray, p_positive: np.ndarray, n_bins: int = 10) -> ReliabilityCurve:
    """Bin i holds scores in [i/n_bins, (i+1)/n_bins); the last bin includes 1."""
    y = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(p_positive, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if len(p) and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise ValueError("scores must be probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=n_bins) / counts
        observed = np.bincount(which, weights=y.astype(float), minlength=n_bins) / counts
    brier = float(np.mean((p - y) ** 2)) if len(p) else math.nan
    return ReliabilityCurve(edges, counts.astype(np.int64), mean_p, observed, brier)


def expected_calibration_error(y_true: np.ndarray, p_positive: np.ndarray, n_bins: int = 10) -> float:
    return reliability_curve(y_true, p_positive, n_bins).ece


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    target_sensitivity: float
    sensitivity: float  # on the cells it was chosen on (so not an independent estimate)
    specificity: float  # NaN without negative cells
    n_positive: int
    n_negative: int
    source: str = ""  # which predictions it was chosen on, in words

    def to_dict(self) -> dict:
        """For JSON: NaN (the specificity without negative cells) as None."""
        return json_safe(asdict(self))


def choose_threshold(y_true: np.ndarray, p_positive: np.ndarray, target_sensitivity: float,
                     source: str = "") -> ThresholdChoice:
    """The highest threshold t with sensitivity(score >= t) >= target on these cells.

    With k = ceil(target * n_positive), t is the k-th highest positive score: the fewest
    cells are called positive (highest specificity) while k positives still are.
    """
    if not 0 < target_sensitivity <= 1:
        raise LeukolearnError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    y = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(p_positive, dtype=float).ravel()
    pos = np.sort(p[y])[::-1]
    if len(pos) == 0:
        raise LeukolearnError("no positive (blast) cells among the labelled predictions: "
                              "cannot choose a threshold for a target sensitivity")
    k = max(1, math.ceil(target_sensitivity * len(pos) - 1e-9))
    t = float(pos[k - 1])
    neg = p[~y]
    return ThresholdChoice(
        threshold=t, target_sensitivity=float(target_sensitivity),
        sensitivity=float(np.mean(pos >= t)),
        specificity=float(np.mean(neg < t)) if len(neg) else math.nan,
        n_positive=int(len(pos)), n_negative=int(len(neg)), source=source,
    )


