"""One sample's blast count: the blast fraction, its Wilson interval, the diagnostic call.

Per sample: cells, blasts (cells at or above the threshold), the raw blast fraction q with a
Wilson interval and, where the classifier's error rates at that threshold are known
(`ErrorRates`, measured on held-out labelled cells by `leukolearn.predict.threshold.error_rates`),
the *adjusted count* (Forman 2008, "Quantifying counts and costs via classification", Data
Min Knowl Disc 17:164; the Rogan-Gladen estimator of prevalence with an imperfect test,
Gart & Buck 1966; Rogan & Gladen 1978):

    p = (q - FPR) / (TPR - FPR), clipped to [0, 1].

Why: the cells called blasts are TPR * p + FPR * (1 - p) of the sample, so with TPR < 1 and
FPR > 0 the raw fraction is pulled towards the classifier's own balance; it over-counts
samples with few blasts and under-counts those with many. The correction assumes that TPR
and FPR on the new sample are those measured on the held-out cells: the sample may hold more
or fewer blasts than the training data (prior shift), but its blasts and its other cells must
look like the held-out ones (same stain, scanner, cell types). It is left out (NaN) when
TPR - FPR < `MIN_SEPARATION`: dividing by so small a difference only amplifies noise.

The adjusted interval takes the uncertainty of TPR and FPR into account as well as the
sample's own (see `adjusted_interval`). A sample whose raw fraction lies wholly below the
FPR (fewer cells called than a sample without any blast would give) or wholly above the TPR
contradicts the assumption: clipping would report "0 (0-0)" or "100 (100-100)", a certainty
nothing supports. Its adjusted count is undefined instead, with the reason
(`rates_contradicted`), and its call is "uncertain".

The call against the diagnostic threshold (WHO: >= 20 % blasts for acute leukaemia) is
"above" / "below" when the whole interval is on one side, "uncertain" otherwise; it is made
on the adjusted interval where there is one (the raw count is biased), else on the raw one,
and `SampleResult.call_on` says which.

Every fraction an option gives (the confidence, the thresholds) is checked by
`check_fraction` before any work: `--confidence 95` is refused with a hint to give 0.95, not
turned into a NaN interval.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from leukolearn.analysis.metrics import wilson_interval
from leukolearn.errors import LeukolearnError
from leukolearn.files import json_safe

DIAGNOSTIC_THRESHOLD = 0.20  # WHO: >= 20 % blasts in blood or marrow for acute leukaemia
MIN_SEPARATION = 0.1  # TPR - FPR below this: no adjusted count
CONFIDENCE = 0.95  # of the intervals, unless asked otherwise (`predict --confidence`)


def check_fraction(option: str, value: float, *, zero: bool = False, one: bool = False
                   ) -> float:
    """`value` if it is a fraction in (0, 1) (`zero`, `one`: those ends allowed too), else a
    LeukolearnError naming `option`. A value between 1 and 100 is refused, not read as a
    percentage: 1 itself would be ambiguous (100 % or 1 %?), and a result file records the
    value as given; the message says what to give instead."""
    low_ok = value >= 0 if zero else value > 0
    high_ok = value <= 1 if one else value < 1
    if low_ok and high_ok:  # False for NaN too
        return value
    interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
    hint = f"; for {value:g} % give {value / 100:g}" if 1 < value < 100 else ""
    raise LeukolearnError(f"{option} must be a fraction in {interval}, got {value:g}{hint}")


@dataclass(frozen=True)
class ErrorRates:
    """A classifier's error rates at one threshold, measured on held-out labelled cells."""

    tpr: float  # sensitivity: fraction of the blasts called blasts
    fpr: float  # 1 - specificity: fraction of the other cells called blasts
    n_positive: int  # blasts TPR was measured on
    n_negative: int  # other cells FPR was measured on
    source: str  # which cells, in words

    @property
    def separation(self) -> float:
        """TPR - FPR (Youden's J): the denominator of the adjusted count."""
        return self.tpr - self.fpr

    @property
    def usable(self) -> bool:
        return self.separation >= MIN_SEPARATION

    def tpr_interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        return wilson_interval(round(self.tpr * self.n_positive), self.n_positive, confidence)

    def fpr_interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        return wilson_interval(round(self.fpr * self.n_negative), self.n_negative, confidence)

    def to_dict(self) -> dict:
        return json_safe({**asdict(self), "separation": self.separation})


def adjusted_count(q: float, tpr: float, fpr: float) -> float:
    """The blast fraction corrected for the classifier's errors: (q - FPR) / (TPR - FPR),
    clipped to [0, 1]; NaN unless TPR > FPR."""
    if not tpr > fpr or math.isnan(q):
        return math.nan
    return float(min(max((q - fpr) / (tpr - fpr), 0.0), 1.0))


def rates_contradicted(k: int, n: int, rates: ErrorRates, confidence: float = CONFIDENCE
                       ) -> str:
    """Why a sample with `k` of `n` cells called positive contradicts `rates`, or "".

    The model of the adjusted count says the called fraction is q = FPR + p (TPR - FPR),
    between FPR (no positive cells) and TPR (only positive cells). Where even the sample's
    whole Wilson interval lies below FPR's interval (or above TPR's), no p in [0, 1] and no
    rates in their intervals explain it: the classifier does not behave on these cells as it
    did on the held-out ones (another stain, scanner or mix of cell types), and every p would
    clip to 0 (or 1) at both ends: a zero-width interval, a certainty the data do not give.
    E.g. 46 of 100 called (q up to 56 %) against FPR 0.62 on 500 cells (from 58 %)."""
    if n == 0:
        return ""
    q_low, q_high = wilson_interval(k, n, confidence)
    tpr_low, tpr_high = rates.tpr_interval(confidence)
    fpr_low, fpr_high = rates.fpr_interval(confidence)
    pct = f"{100 * confidence:g}%"
    if q_high <= fpr_low:
        return (f"{k} of {n} cells called positive ({pct} CI up to {q_high:.1%}) is below "
                f"the false-positive rate {rates.fpr:.1%} (CI from {fpr_low:.1%}) on the "
                "held-out cells: fewer than a sample without positive cells would give, so "
                "those error rates do not hold for this sample")
    if q_low >= tpr_high:
        return (f"{k} of {n} cells called positive ({pct} CI from {q_low:.1%}) is above the "
                f"sensitivity {rates.tpr:.1%} (CI up to {tpr_high:.1%}) on the held-out "
                "cells: more than a sample of positive cells only would give, so those error "
                "rates do not hold for this sample")
    return ""


def adjusted_interval(k: int, n: int, rates: ErrorRates, confidence: float = CONFIDENCE
                      ) -> tuple[float, float]:
    """An interval for the adjusted count that holds the three Wilson intervals (the sample's
    fraction q = k/n, TPR over n_positive, FPR over n_negative) at once.

    On TPR > FPR, p(q, TPR, FPR) = (q - FPR) / (TPR - FPR) has
        dp/dq   =  1 / (TPR - FPR)              > 0: p rises with q;
        dp/dTPR = -(q - FPR) / (TPR - FPR)^2    <= 0 where q >= FPR (p >= 0);
        dp/dFPR =  (q - TPR) / (TPR - FPR)^2    <= 0 where q <= TPR (p <= 1).
    So where p is in [0, 1] it rises with q and falls with TPR and FPR, and the smallest p
    over the box of the three intervals is at (q_low, TPR_high, FPR_high), the largest at
    (q_high, TPR_low, FPR_low). Where a corner lies outside FPR <= q <= TPR its p is < 0 or
    > 1 and clips to 0 or 1 as every p beyond it does, so after clipping the corners are still
    the extremes. This needs the whole box on TPR > FPR, i.e. TPR_low > FPR_high; otherwise
    the box holds a classifier that cannot tell the classes apart, and the interval is the
    whole (0, 1). Where the sample contradicts the rates (`rates_contradicted`: the
    corners would clip to one end, a zero-width interval) it is (nan, nan): undefined.

    Each interval is at `confidence`, so the box covers all three true values at once with
    probability >= confidence^3 (independent cells), but the projection of a box onto p
    through its extreme corners is conservative, and the result is wider than a joint
    interval would need to be: simulated at TPR 0.85, FPR 0.15 (30 or 150 labelled cells of
    each class) and 100 cells per sample, it held the true fraction in > 99 % of samples.
    """
    check_fraction("confidence", confidence)
    if n == 0 or rates_contradicted(k, n, rates, confidence):
        return math.nan, math.nan
    q_low, q_high = wilson_interval(k, n, confidence)
    tpr_low, tpr_high = rates.tpr_interval(confidence)
    fpr_low, fpr_high = rates.fpr_interval(confidence)
    if not tpr_low > fpr_high:
        return 0.0, 1.0
    low = (q_low - fpr_high) / (tpr_high - fpr_high)
    high = (q_high - fpr_low) / (tpr_low - fpr_low)
    return float(min(max(low, 0.0), 1.0)), float(min(max(high, 0.0), 1.0))


@dataclass(frozen=True)
class SampleResult:
    sample: str
    n_cells: int
    n_blasts: int  # cells called blasts (score >= threshold): the raw count
    blast_fraction: float  # raw: n_blasts / n_cells
    ci_low: float
    ci_high: float
    above_threshold: bool  # the point estimate the call is on (`call_on`) is >= the threshold
    call: str  # 'above' | 'below' | 'uncertain' (the interval straddles the threshold)
    adjusted_fraction: float = math.nan  # NaN without (usable) error rates
    adjusted_ci_low: float = math.nan
    adjusted_ci_high: float = math.nan
    call_on: str = "raw"  # 'adjusted' | 'raw': which interval the call was made on
    # Why the adjusted count is undefined although the rates are usable (see
    # `rates_contradicted`); "" otherwise.
    adjusted_note: str = ""
    # The domain check (`predict.domain`): "inside" | "outside" | "unchecked"; the
    # sample's median distance over the cell limit; its share of cells beyond that limit.
    domain: str = "unchecked"
    domain_distance_ratio: float = math.nan
    domain_outside_share: float = math.nan

    def to_dict(self) -> dict:
        """For JSON: NaN (a sample without cells, no adjusted count) becomes None."""
        return json_safe(asdict(self))


def _call(low: float, high: float, diagnostic_threshold: float) -> str:
    return "above" if low >= diagnostic_threshold else "below" if high < diagnostic_threshold \
        else "uncertain"


def summarize_sample(sample: str, is_blast: np.ndarray, diagnostic_threshold: float,
                     confidence: float = CONFIDENCE, rates: ErrorRates | None = None) -> SampleResult:
    """Raw count and interval; with `rates` (and TPR - FPR >= MIN_SEPARATION) also the
    adjusted count and interval, which the call is then made on. Where the sample
    contradicts the rates the adjusted count is undefined, `adjusted_note` says why, and
    the call is "uncertain": the raw count is biased by exactly the rates that do not hold."""
    check_fraction("the confidence", confidence)
    check_fraction("the diagnostic threshold", diagnostic_threshold)
    n, k = int(len(is_blast)), int(np.sum(is_blast))
    low, high = wilson_interval(k, n, confidence)
    fraction = k / n if n else math.nan
    adj = adj_low = adj_high = math.nan
    note = ""
    if rates is not None and rates.usable and n:
        note = rates_contradicted(k, n, rates, confidence)
        if not note:
            adj = adjusted_count(fraction, rates.tpr, rates.fpr)
            adj_low, adj_high = adjusted_interval(k, n, rates, confidence)
    if note:
        point, call, call_on = math.nan, "uncertain", "adjusted"
    elif math.isnan(adj):
        point, call, call_on = fraction, _call(low, high, diagnostic_threshold), "raw"
    else:
        point, call, call_on = adj, _call(adj_low, adj_high, diagnostic_threshold), "adjusted"
    return SampleResult(sample, n, k, fraction, low, high, bool(point >= diagnostic_threshold),
                        call, adj, adj_low, adj_high, call_on, note)
