"""The Supplementary Table S2 analogue: the test metric per training size over folds.

Built from a run store alone. Mean and s.d. are over every finished job of a size (folds
x replicates); the s.d. is the sample one (ddof=1), NaN with a single job. Jobs whose
metric is undefined (e.g. AUC of a one-class test set) count in `n_jobs` but not in the
statistics; degenerate runs (constant predictions) are counted *and* kept in the
statistics, as the paper's numbers would have included them. `n_restarted` counts the
jobs whose network was re-initialised after dying (TrainConfig.restarts); jobs saved
before restarts were recorded (JobRecord.restarts None) count as not restarted, which is
exact for a run with restarts 0 (the paper presets).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

from leukolearn.files import csv_text, json_safe, to_json
from leukolearn.runstore.store import JobRecord, RunStore

# n_restarted last (added later): a CSV reader that goes by position finds the others unmoved.
COLUMNS = ("size", "n_jobs", "n_folds", "mean", "sd", "median", "min", "max", "n_degenerate",
           "n_undefined", "n_failed", "n_restarted")


@dataclass(frozen=True)
class SizeRow:
    size: int
    n_jobs: int  # finished jobs
    n_folds: int  # distinct folds among them
    mean: float
    sd: float
    median: float
    min: float
    max: float
    n_degenerate: int
    n_undefined: int  # metric NaN
    n_failed: int  # last attempt raised; run again on resume
    n_restarted: int = 0  # finished jobs that needed at least one restart


@dataclass(frozen=True)
class Summary:
    metric_name: str
    rows: list[SizeRow]
    # multiclass runs: per training size, confusion counts summed over jobs (true x predicted)
    class_names: tuple[str, ...] = ()
    confusion: dict[int, list[list[int]]] = field(default_factory=dict)

    def row(self, size: int) -> SizeRow:
        return next(r for r in self.rows if r.size == size)

    def to_dict(self) -> dict:
        d = {"metric": self.metric_name, "rows": [json_safe(asdict(r)) for r in self.rows]}
        if self.confusion:
            d["class_names"] = list(self.class_names)
            d["confusion"] = {str(k): v for k, v in self.confusion.items()}
        return d

    def to_json(self) -> str:
        return to_json(self.to_dict())

    def to_csv(self) -> str:
        """One line per size; NaN as an empty field; floats to 4 decimals."""
        return csv_text(("metric",) + COLUMNS,
                        [[self.metric_name] + [getattr(r, c) for c in COLUMNS] for r in self.rows],
                        digits=4)


def summarize(records: Iterable[JobRecord], metric_name: str | None = None) -> Summary:
    """Group job records (done and failed) by training size."""
    records = list(records)
    if metric_name is None:
        metric_name = next((r.metric_name for r in records if r.metric_name), "metric")
    rows = []
    for size in sorted({r.size for r in records}):
        done = [r for r in records if r.size == size and r.status == "done"]
        values = np.array([r.metric for r in done], dtype=float)
        ok = values[~np.isnan(values)]
        rows.append(SizeRow(
            size=size, n_jobs=len(done), n_folds=len({r.fold for r in done}),
            mean=_stat(np.mean, ok), sd=float(np.std(ok, ddof=1)) if len(ok) > 1 else math.nan,
            median=_stat(np.median, ok), min=_stat(np.min, ok), max=_stat(np.max, ok),
            n_degenerate=sum(r.degenerate for r in done), n_undefined=int(np.isnan(values).sum()),
            n_failed=sum(1 for r in records if r.size == size and r.status == "failed"),
            n_restarted=sum(1 for r in done if r.restarts),  # None (not recorded) counts as 0
        ))
    return Summary(metric_name, rows)


def summarize_store(store: RunStore) -> Summary:
    """`summarize` of a run (of its ensembles, for a run that scores its replicates as one:
    analysis.ensemble), plus confusion counts per size when its metric is weighted F1."""
    from leukolearn.analysis.ensemble import scored_run

    store = scored_run(store)
    summary = summarize(store.results(include_failed=True), store.config_dict.get("metric"))
    if summary.metric_name != "weighted_f1":
        return summary
    names = tuple(store.dataset_info.class_names)
    counts: dict[int, np.ndarray] = {}
    for record in store.results():
        pred = store.predictions(record.job_id)
        m = np.zeros((len(names), len(names)), dtype=np.int64)
        np.add.at(m, (pred.labels, pred.probs.argmax(axis=1)), 1)
        counts[record.size] = counts.get(record.size, 0) + m
    return Summary(summary.metric_name, summary.rows, names,
                   {size: m.tolist() for size, m in sorted(counts.items())})


def _stat(fn, values: np.ndarray) -> float:
    return float(fn(values)) if len(values) else math.nan


def compare_csv(summaries: dict[str, Summary]) -> str:
    """Several runs' summaries side by side, one line per method and size: the summary's
    columns with a `method` column first (the methods in the same folds, e.g. the paper's
    CNN and the baselines, `leukolearn compare`)."""
    metrics = {s.metric_name for s in summaries.values()}
    if len(metrics) > 1:
        raise ValueError(f"the runs score different metrics: {sorted(metrics)}")
    return csv_text(("method", "metric") + COLUMNS,
                    [[name, s.metric_name] + [getattr(r, c) for c in COLUMNS]
                     for name, s in summaries.items() for r in s.rows], digits=4)


def job_key(record: JobRecord) -> tuple[int, int, int]:
    """(fold, size, replicate): the same job in runs of the same folds."""
    return record.fold, record.size, record.replicate


def paired_records(records: dict[str, list[JobRecord]]) -> dict[str, list[JobRecord]]:
    """Each run's finished jobs, kept only where every run that has the job's training size
    finished the same job (fold, size, replicate): per size, the methods are then scored
    on exactly the same test sets, however far each run has got. (An ensemble run's record
    of a fold and size, replicate 0, pairs with the other runs' replicate 0.)"""
    done = {name: {job_key(r): r for r in recs if r.status == "done"} for name, recs in records.items()}
    keep: set[tuple[int, int, int]] = set()
    for size in {r.size for recs in done.values() for r in recs.values()}:
        have = [{j for j, r in recs.items() if r.size == size} for recs in done.values()]
        keep |= set.intersection(*[h for h in have if h])
    return {name: [r for j, r in recs.items() if j in keep] for name, recs in done.items()}
