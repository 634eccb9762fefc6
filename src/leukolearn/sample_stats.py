"""One sample's blast count: the blast fraction, its Wilson interval, the diagnostic call.

Per sample: cells, blasts (cells at or above the threshold), the blast fraction with a
Wilson interval, and a call against the diagnostic threshold (WHO: >= 20 % blasts for
acute leukaemia): "above" / "below" when the whole interval is on one side, "uncertain"
otherwise.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from leukolearn.metrics import wilson_interval

DIAGNOSTIC_THRESHOLD = 0.20  # WHO: >= 20 % blasts in blood or marrow for acute leukaemia


@dataclass(frozen=True)
class SampleResult:
    sample: str
    n_cells: int
    n_blasts: int
    blast_fraction: float
    ci_low: float
    ci_high: float
    above_threshold: bool  # the point estimate is >= the diagnostic threshold
    call: str  # 'above' | 'below' | 'uncertain' (the interval straddles the threshold)

    def to_dict(self) -> dict:
        """For JSON: NaN (a sample without cells) becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


def summarize_sample(sample: str, is_blast: np.ndarray, diagnostic_threshold: float,
                     confidence: float = 0.95) -> SampleResult:
    n, k = int(len(is_blast)), int(np.sum(is_blast))
    low, high = wilson_interval(k, n, confidence)
    fraction = k / n if n else math.nan
    call = "above" if low >= diagnostic_threshold else "below" if high < diagnostic_threshold \
        else "uncertain"
    return SampleResult(sample, n, k, fraction, low, high, bool(fraction >= diagnostic_threshold), call)
