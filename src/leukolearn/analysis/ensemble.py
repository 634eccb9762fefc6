"""A run whose replicates are scored as one ensemble per fold and training size.

`--replicates K` trains K networks per fold and size, each from its own initialisation.
Scored one by one (the paper's way) they measure how much a single training varies; with
`ensemble` set in the protocol options (the ensemble-* presets) they are one model, the
mean of their K class probabilities, and the run is scored by that: on ALL-IDB2 an
ensemble of 3 raised the mean AUC at 10 training images from 0.73 to 0.88 and cut its s.d.
from 0.24 to 0.09 (docs/results/all-idb2-recipe).

`scored_run(store)` is what summaries, figures, the report and `compare` read: the store
itself for an ordinary run; for an ensemble run a view with the same `results()` and
`predictions()` (and everything else of the store), one record per fold and size, whose
metric is that of the mean probabilities. A fold and size is scored once all K of its
networks are in (a sweep still running shows fewer), is failed when any of them failed, and
counts as degenerate when any of them is dead.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Mapping

import numpy as np

from leukolearn.analysis.metrics import score
from leukolearn.errors import LeukolearnError
from leukolearn.runstore.store import JobRecord, Predictions, RunStore


def ensemble_size(config: Mapping[str, Any]) -> int:
    """The networks per ensemble of a run's config (config.json as a dict); 0 when the run
    scores each network on its own."""
    options = config.get("options", {})
    return int(options.get("replicates") or 1) if options.get("ensemble") else 0


def is_ensemble(config: Mapping[str, Any]) -> bool:
    """Whether a run's config scores its replicates as one ensemble."""
    return ensemble_size(config) > 0


def scored_run(store: RunStore) -> Any:
    """The store, or for an ensemble run the `EnsembleView` of it (a view is kept as it is)."""
    if isinstance(store, EnsembleView) or not is_ensemble(store.config_dict):
        return store
    return EnsembleView(store)


def ensemble_id(fold: int, size: int) -> str:
    return f"f{fold:02d}-n{size}-ensemble"


class EnsembleView:
    """A read-only view of an ensemble run: `results()` and `predictions()` per fold and
    size; `history` and `split` of an ensemble are those of its first network; anything
    else is the store's."""

    def __init__(self, store: RunStore):
        self._store = store
        self._replicates = ensemble_size(store.config_dict)
        self._metric = store.config_dict.get("metric", "auc")
        self._members: dict[str, list[JobRecord]] = {}
        self._records: list[JobRecord] = []
        self._predictions: dict[str, Predictions] = {}
        self._build()

    def __getattr__(self, name: str) -> Any:  # everything not scored differently
        return getattr(self._store, name)

    def results(self, *, include_failed: bool = False) -> list[JobRecord]:
        return [r for r in self._records if include_failed or r.status == "done"]

    def predictions(self, job_id: str) -> Predictions:
        return self._predictions[job_id] if job_id in self._predictions \
            else self._store.predictions(job_id)

    def history(self, job_id: str) -> list[dict]:
        return self._store.history(self._first(job_id))

    def split(self, job_id: str):
        return self._store.split(self._first(job_id))

    def _first(self, job_id: str) -> str:
        return self._members[job_id][0].job_id if job_id in self._members else job_id

    def _build(self) -> None:
        groups: dict[tuple[int, int], list[JobRecord]] = defaultdict(list)
        for record in self._store.results(include_failed=True):
            groups[(record.fold, record.size)].append(record)
        for (fold, size), records in sorted(groups.items()):
            job_id = ensemble_id(fold, size)
            records = sorted(records, key=lambda r: r.replicate)
            failed = [r for r in records if r.status != "done"]
            if failed:
                self._records.append(dataclasses.replace(failed[0], job_id=job_id, replicate=0))
                continue
            if len(records) < self._replicates:
                continue  # its other networks are still training
            preds = [self._store.predictions(r.job_id) for r in records]
            if any(not np.array_equal(p.test_idx, preds[0].test_idx) for p in preds):
                raise LeukolearnError(f"{self._store.path}: the networks of fold {fold}, size "
                                      f"{size} were tested on different images; not one ensemble")
            probs = np.mean([p.probs for p in preds], axis=0, dtype=np.float64).astype(np.float32)
            labels = preds[0].labels
            self._members[job_id] = records
            self._predictions[job_id] = Predictions(preds[0].test_idx, labels, probs)
            self._records.append(dataclasses.replace(
                records[0], job_id=job_id, replicate=0, metric=score(self._metric, labels, probs),
                best_epoch=None, epochs_run=sum(r.epochs_run or 0 for r in records),
                seconds=sum(r.seconds or 0.0 for r in records),
                # dead when any of its networks is (a dead one averaged in is still a failure)
                degenerate=any(r.degenerate for r in records),
                weights=None, finished_at=max(r.finished_at for r in records),
                # networks re-initialised after dying, over the ensemble
                restarts=sum(r.restarts or 0 for r in records)))
