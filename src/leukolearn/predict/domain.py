"""The domain check at prediction time: how far each cell lies from the training cells of
the model (or of each fold model of a RUN), and whether a sample as a whole lies outside
(`analysis.domain` defines the check; every model `train` and `sweep` make carries one).

A RUN's fold models each carry their own check: a cell's distance is reported as its mean
ratio to the models' cell limits (above 1: farther than 95 % of held-out in-domain
cells), and a sample is outside when most of the models that have a check find it so.

A sample outside the training domain gets no diagnostic call (`WITHHELD`): the error rates
behind the call were measured on cells of the training lab, which these cells do not
resemble. Labelled cells of the new lab lift it: `leukolearn evaluate` to see how the model
does there, `leukolearn calibrate --part all` on them for error rates measured there, and
then `predict --lab-calibrated`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from leukolearn.analysis.domain import DomainCheck, domain_check_of, sample_domain
from leukolearn.predict.counts import SampleResult

WITHHELD = "withheld"
OUTSIDE_NOTE = ("outside the training domain: evaluate or calibrate on labelled cells from "
                "this lab")


def checks_of(models: Sequence) -> list[DomainCheck | None]:
    return [domain_check_of(m) for m in models]


@dataclass(frozen=True)
class SampleVerdict:
    status: str  # "inside" | "outside" | "unchecked" (no model carries a check)
    distance_ratio: float  # the sample's median of the cells' distance / cell limit
    outside_share: float  # cells beyond the cell limit (mean over models)
    votes: int  # models that find the sample outside
    n_checked: int  # models with a check

    def to_dict(self) -> dict:
        return {"status": self.status, "distance_ratio": _none(self.distance_ratio),
                "outside_share": _none(self.outside_share), "models_outside": self.votes,
                "models_checked": self.n_checked}


def _none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def cell_ratios(checks: Sequence[DomainCheck | None], distances: np.ndarray) -> np.ndarray:
    """(N,) each cell's distance over its model's cell limit, averaged over the models
    with a check; NaN where none has one. `distances`: (N, n_models)."""
    limits = np.array([c.cell_limit if c is not None else np.nan for c in checks])
    with np.errstate(invalid="ignore"):
        ratios = distances / limits
    if np.isnan(limits).all():
        return np.full(len(distances), np.nan)
    return np.nanmean(ratios[:, ~np.isnan(limits)], axis=1)


def sample_verdict(checks: Sequence[DomainCheck | None], distances: np.ndarray) -> SampleVerdict:
    """The verdict on one sample's cells; `distances` (n_cells, n_models)."""
    own = [(j, c) for j, c in enumerate(checks) if c is not None]
    if not own or not len(distances):
        return SampleVerdict("unchecked", math.nan, math.nan, 0, 0)
    found = [sample_domain(c, distances[:, j]) for j, c in own]
    votes = sum(f.outside for f in found)
    status = "outside" if votes * 2 > len(own) else "inside"
    ratio = float(np.median(cell_ratios(checks, distances)))
    return SampleVerdict(status, ratio, float(np.mean([f.share for f in found])), votes,
                         len(own))


def with_verdict(result: SampleResult, verdict: SampleVerdict, *, lab_calibrated: bool) -> SampleResult:
    """`result` with the domain verdict; outside the domain its call is withheld unless
    the error rates in use were measured on this lab's labelled cells (`lab_calibrated`)."""
    result = replace(result, domain=verdict.status, domain_distance_ratio=verdict.distance_ratio,
                     domain_outside_share=verdict.outside_share)
    if verdict.status == "outside" and not lab_calibrated:
        result = replace(result, call=WITHHELD)
    return result
