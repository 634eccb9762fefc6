"""Several runs in the same folds side by side (`leukolearn compare`): their summaries, and
per training size each method against the first one, fold by fold.

A difference of means over folds says little on its own when the folds differ as much as
the methods do (ALL-IDB2 at 10 images: a fold-to-fold s.d. of 0.24): the paired view
scores both methods on the same test images and reports the mean of the per-fold
differences, its interval, how many folds each side wins and the Wilcoxon signed-rank test.

The interval is Student's t over the per-fold differences. In the ALL protocol the folds'
training sets overlap, so the folds are not independent samples and the interval is, if
anything, too narrow: it says how consistent a gain was on these folds, not a population
bound. A run with replicates (and no ensemble scoring) enters with its per-fold mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from leukolearn.analysis.summary import Summary, job_key, paired_records, summarize
from leukolearn.errors import LeukolearnError
from leukolearn.files import csv_text
from leukolearn.runstore.store import JobRecord, RunStore

CONFIDENCE = 0.95
PAIRED_COLUMNS = ("size", "method", "reference", "n_folds", "mean_difference", "ci_low",
                  "ci_high", "wins", "ties", "losses", "wilcoxon_p")


@dataclass(frozen=True)
class PairedRow:
    size: int
    method: str
    reference: str
    n_folds: int  # folds both finished with a defined metric
    mean_difference: float  # method - reference, mean over those folds
    ci_low: float
    ci_high: float
    wins: int  # folds where the method scored higher
    ties: int
    losses: int
    wilcoxon_p: float  # two-sided; NaN below 2 folds, 1.0 when every fold ties


@dataclass(frozen=True)
class Comparison:
    metric_name: str
    records: dict[str, list[JobRecord]]  # method -> its finished (and failed) jobs
    summaries: dict[str, Summary]
    paired: bool  # only the jobs every run finished, per size

    @property
    def names(self) -> list[str]:
        return list(self.records)

    def series(self) -> dict[str, tuple[list[int], list[float]]]:
        """method -> (size, metric) of each finished job: what `methods_figure` draws."""
        return {name: ([r.size for r in recs if r.status == "done"],
                       [r.metric for r in recs if r.status == "done"])
                for name, recs in self.records.items()}

    def paired_rows(self) -> list[PairedRow]:
        """Every method after the first against the first, per training size both have."""
        reference, *others = self.names
        return [row for name in others
                for row in paired_differences(self.records[reference], self.records[name],
                                              reference=reference, method=name)]

    def summary_csv(self) -> str:
        from leukolearn.analysis.summary import compare_csv

        return compare_csv(self.summaries)

    def paired_csv(self) -> str:
        return csv_text(PAIRED_COLUMNS, [[getattr(r, c) for c in PAIRED_COLUMNS]
                                         for r in self.paired_rows()], digits=4)


def load_comparison(runs: Sequence[Path], names: Sequence[str], *,
                    paired: bool = False) -> Comparison:
    """The runs, as `compare` reads them: each scored as its summary is (an ensemble run by
    its ensembles); refused when they score different metrics or test a job on different
    images (not the same folds)."""
    from leukolearn.analysis.ensemble import scored_run

    if len(names) != len(runs) or len(set(names)) != len(names):
        raise LeukolearnError(f"--labels: give {len(runs)} distinct names, one per run")
    records, splits, metric_names = {}, {}, {}
    for name, run in zip(names, runs):
        with RunStore.open(run) as opened:
            store = scored_run(opened)
            records[name] = store.results(include_failed=True)
            splits[name] = {job_key(r): tuple(map(int, store.split(r.job_id)[2]))
                            for r in records[name] if r.status == "done"}
            metric_names[name] = store.config_dict.get("metric")
    if paired:
        records = paired_records(records)
    summaries = {name: summarize(recs, metric_names[name]) for name, recs in records.items()}
    metrics = {s.metric_name for s in summaries.values()}
    if len(metrics) > 1:
        raise LeukolearnError(f"the runs score different metrics ({', '.join(sorted(metrics))})")
    shared = set.intersection(*(set(s) for s in splits.values()))
    if any(len({splits[n][j] for n in names}) > 1 for j in shared):
        raise LeukolearnError("the runs test the same job on different images: not the same "
                              "folds (same dataset, protocol and --seed needed)")
    return Comparison(metrics.pop(), records, summaries, paired)


def paired_differences(reference_jobs: Sequence[JobRecord], method_jobs: Sequence[JobRecord],
                       *, reference: str, method: str,
                       confidence: float = CONFIDENCE) -> list[PairedRow]:
    """Per training size the two have in common, `method` minus `reference` fold by fold
    (each fold's mean over its replicates)."""
    ref, other = _fold_means(reference_jobs), _fold_means(method_jobs)
    rows = []
    for size in sorted({s for s, _ in ref} & {s for s, _ in other}):
        folds = sorted(f for s, f in ref if s == size and (s, f) in other)
        diffs = np.array([other[size, f] - ref[size, f] for f in folds])
        rows.append(PairedRow(size, method, reference, len(diffs), *_mean_interval(diffs, confidence),
                              wins=int((diffs > 0).sum()), ties=int((diffs == 0).sum()),
                              losses=int((diffs < 0).sum()), wilcoxon_p=_wilcoxon(diffs)))
    return rows


def _fold_means(jobs: Sequence[JobRecord]) -> dict[tuple[int, int], float]:
    """(size, fold) -> mean metric over the fold's finished replicates with a defined metric."""
    values: dict[tuple[int, int], list[float]] = {}
    for r in jobs:
        if r.status == "done" and r.metric is not None and math.isfinite(r.metric):
            values.setdefault((r.size, r.fold), []).append(r.metric)
    return {key: float(np.mean(v)) for key, v in values.items()}


def _mean_interval(diffs: np.ndarray, confidence: float) -> tuple[float, float, float]:
    from scipy import stats

    if len(diffs) == 0:
        return math.nan, math.nan, math.nan
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return mean, mean - float(half), mean + float(half)


def _wilcoxon(diffs: np.ndarray) -> float:
    from scipy import stats

    if len(diffs) < 2:
        return math.nan
    if not np.any(diffs):
        return 1.0  # every fold tied: scipy's test is undefined there
    return float(stats.wilcoxon(diffs).pvalue)
