"""The run directory: everything needed to redraw a figure without training again.

    RUN/
      config.json     the SweepConfig (written last at creation: its presence marks a run)
      dataset.json    name, root, fingerprint, image count, class names and counts, load options
      versions.json   leukolearn, torch, numpy, python at creation
      run.sqlite      one row per job (schema in runstore.schema) plus the image table
      weights/<job_id>.safetensors
      .lock           held (runstore.lock) by the one process that writes

SQLite uses the default rollback journal with synchronous=FULL, not WAL: there is one
writer committing one small transaction per finished job (minutes apart), so WAL's
concurrency buys nothing, while the plain journal works on network filesystems and
keeps the run directory a few ordinary files that can be copied or committed.

A job's weights are written to a temporary file, fsynced and renamed into place *before*
its row commits, so a row never points to a missing file; a weights file without a row
(a crash in between) is simply overwritten when the job runs again. A save that fails (a
full disk) removes that job's weights file and raises a LeukolearnError naming the job; the
jobs saved before it stay. A failed job gets a
row with status 'failed' and the message; it is not "finished" and runs again on resume.

This module holds `RunStore` (opening, reading, writing jobs); `runstore.resume` decides
whether a run may resume, `runstore.schema` holds the schema and the records, and
`runstore.lock` the writer's lock.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leukolearn.errors import LeukolearnError
from leukolearn.files import atomic_write, json_safe, software_versions, write_json
from leukolearn.runstore.lock import RunLock
from leukolearn.runstore.resume import (remove_stale_temporaries, check_same_run, diff_configs, normalise,
                                        refuse_foreign)
from leukolearn.runstore.schema import SCHEMA, DatasetInfo, from_npy, migrate, to_npy, write_weights

if TYPE_CHECKING:  # pragma: no cover
    from leukolearn.data.cellimages import CellImages

# The store sits below the experiments that write it: a job and its outcome are whatever
# has the attributes read here (experiments.protocol.Job, experiments.sweep.JobOutcome).
Job = Any
JobOutcome = Any


@dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table, without the arrays (see `predictions`, `history`, `split`)."""

    job_id: str
    fold: int
    size: int
    replicate: int
    seed: int
    status: str  # 'done' | 'failed'
    metric_name: str | None
    metric: float  # NaN when undefined or failed
    best_epoch: int | None
    epochs_run: int | None
    seconds: float | None
    degenerate: bool
    error: str | None
    weights: str | None
    finished_at: str
    # Dead networks re-initialised before the kept one; None: not recorded (a failed job,
    # or a job saved by a version before run.sqlite schema 2).
    restarts: int | None = None
    # How it ran (schema 3; None: not recorded, as for restarts): the fused C kernels or
    # PyTorch's layers, torch's thread count, and the device.
    kernels: bool | None = None
    threads: int | None = None
    device: str | None = None


@dataclass(frozen=True)
class Predictions:
    test_idx: np.ndarray  # (n,) int64 indices into the CellImages
    labels: np.ndarray  # (n,) int64
    probs: np.ndarray  # (n, n_classes) float32


class RunStore:
    """A run directory. `create_or_resume` to write (takes the lock), `open` to read."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: RunLock | None = None):
        self.path = path
        self._conn = conn
        self._lock = lock

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, path: str | Path, *, config: Any,
                         dataset: DatasetInfo, cells: "CellImages | None" = None) -> "RunStore":
        """Start a run in `path`, or resume it if it holds the same config and dataset.

        Refuses (LeukolearnError) a directory that is something else, a run with another
        config or dataset, and a run another process is writing.
        """
        path = Path(path)
        if cells is not None and cells.fingerprint != dataset.fingerprint:
            raise ValueError("DatasetInfo does not describe these cells (fingerprints differ)")
        if path.exists() and not path.is_dir():
            raise LeukolearnError(f"{path} is a file, not a run directory; choose another --out")
        if path.is_dir() and not (path / "config.json").exists():
            refuse_foreign(path)  # before the lock file: leave a user's folder untouched
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path).acquire()
        try:
            remove_stale_temporaries(path)
            config_dict = normalise(config.to_dict() if hasattr(config, "to_dict") else dict(config))
            config_type = type(config) if hasattr(config, "from_dict") else None
            if (path / "config.json").exists():
                check_same_run(path, config_dict, dataset, config_type)
                # A resume may run more (or fewer) of the same folds: the stored config says
                # what was asked last, and fold f's jobs are the same either way.
                if diff_configs(json.loads((path / "config.json").read_text()), config_dict):
                    write_json(path / "config.json", config_dict)
            else:
                refuse_foreign(path)
                # config.json last: its presence means the other two are complete.
                write_json(path / "dataset.json", dataset.to_dict())
                write_json(path / "versions.json", software_versions())
                write_json(path / "config.json", config_dict)
            (path / "weights").mkdir(exist_ok=True)
            conn = sqlite3.connect(path / "run.sqlite", timeout=30)
            conn.execute("PRAGMA synchronous = FULL")
            with conn:
                conn.executescript(SCHEMA)
                migrate(conn)  # a run written by an older version gains the new columns
                if cells is not None and not conn.execute("SELECT 1 FROM images LIMIT 1").fetchone():
                    conn.executemany(
                        "INSERT INTO images VALUES (?, ?, ?)",
                        zip(range(len(cells)), cells.image_ids, cells.labels.tolist()),
                    )
        except (OSError, sqlite3.Error) as exc:  # a full disk, a damaged run.sqlite
            lock.release()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LeukolearnError(f"{path}: cannot write the run directory ({reason})") from None
        except BaseException:
            lock.release()
            raise
        return cls(path, conn, lock)

    @classmethod
    def open(cls, path: str | Path) -> "RunStore":
        """Open a run for reading (no lock: a sweep may still be adding rows)."""
        path = Path(path)
        if not (path / "config.json").exists() or not (path / "run.sqlite").exists():
            raise LeukolearnError(f"{path} is not a leukolearn run (no config.json / run.sqlite)")
        conn = sqlite3.connect(f"file:{path / 'run.sqlite'}?mode=ro", uri=True, timeout=30)
        try:  # connect() reads nothing: fail here, naming the file, not in the first query
            conn.execute("SELECT job_id FROM jobs LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LeukolearnError(f"{path / 'run.sqlite'}: not a readable run database ({exc})") from None
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading -------------------------------------------------------------------------
    @property
    def config_dict(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @property
    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo.from_dict(json.loads((self.path / "dataset.json").read_text()))

    @property
    def versions(self) -> dict:
        return json.loads((self.path / "versions.json").read_text())

    def finished_ids(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT job_id FROM jobs WHERE status = 'done'")}

    def results(self, *, include_failed: bool = False) -> list[JobRecord]:
        """Finished jobs (and failed ones if asked), ordered by size, fold, replicate."""
        where = "" if include_failed else "WHERE status = 'done'"
        # A run of an older version opened read-only lacks the newer columns (only a writer
        # migrates): read them as NULL, "not recorded".
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(jobs)")}
        cols = ", ".join(c if c in have else f"NULL AS {c}" for c in JobRecord.__dataclass_fields__)
        rows = self._conn.execute(f"SELECT {cols} FROM jobs {where} ORDER BY size, fold, replicate")
        return [_record(row) for row in rows]

    def predictions(self, job_id: str) -> Predictions:
        row = self._row(job_id, "test_idx, test_labels, test_probs")
        return Predictions(*(from_npy(b) for b in row))

    def history(self, job_id: str) -> list[dict]:
        return json.loads(self._row(job_id, "history")[0])

    def split(self, job_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train_idx, val_idx, test_idx) of a job, e.g. to embed the images left out of training."""
        return tuple(from_npy(b) for b in self._row(job_id, "train_idx, val_idx, test_idx"))

    def weights_path(self, job_id: str) -> Path | None:
        rel = self._row(job_id, "weights")[0]
        return None if rel is None else self.path / rel

    def image_ids(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT image_id FROM images ORDER BY idx")]

    def image_labels(self) -> np.ndarray:
        """Each image's label (class index) as the plan saw it, in index order."""
        return np.array([r[0] for r in self._conn.execute("SELECT label FROM images ORDER BY idx")],
                        dtype=np.int64)

    def _row(self, job_id: str, cols: str) -> tuple:
        row = self._conn.execute(
            f"SELECT {cols} FROM jobs WHERE job_id = ? AND status = 'done'", (job_id,)
        ).fetchone()
        if row is None:
            raise LeukolearnError(f"no finished job {job_id!r} in {self.path}")
        return row

    # ---- writing -------------------------------------------------------------------------
    def record_done(self, job: Job, outcome: JobOutcome, test_labels: np.ndarray) -> None:
        """Save one finished job: weights file first, then its row in one transaction."""
        self._require_writer()
        weights = None
        metric = float(outcome.metric)
        try:
            if outcome.model is not None:
                weights = f"weights/{job.job_id}.safetensors"
                write_weights(outcome.model, self.path / weights)
            self._insert(job, {
                "status": "done", "metric_name": outcome.metric_name,
                "metric": json_safe(metric),  # an undefined metric (NaN) is NULL
                "best_epoch": int(outcome.best_epoch), "epochs_run": int(outcome.epochs_run),
                "seconds": float(outcome.seconds), "degenerate": int(bool(outcome.degenerate)),
                "test_labels": to_npy(np.asarray(test_labels, dtype=np.int64)),
                "test_probs": to_npy(np.asarray(outcome.test_probs, dtype=np.float32)),
                "history": json.dumps(json_safe(outcome.history, keep_nan=True)), "weights": weights,
                "restarts": int(outcome.restarts),
                "kernels": _optional(outcome.kernels, lambda on: int(bool(on))),
                "threads": _optional(outcome.threads, int),
                "device": _optional(outcome.device, str),
            })
        except BaseException as exc:  # a full disk, Ctrl-C
            if weights is not None and not self._has_done_row(job.job_id):
                (self.path / weights).unlink(missing_ok=True)  # no file without its row
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise self._save_error(job.job_id, exc) from None
            raise

    def record_failed(self, job: Job, message: str) -> None:
        """Note a job that raised; it stays unfinished, so a resume runs it again."""
        self._require_writer()
        try:
            self._insert(job, {"status": "failed", "error": message})
        except (OSError, sqlite3.Error) as exc:
            raise self._save_error(job.job_id, exc) from None

    def copy_job_from(self, other: "RunStore", job_id: str) -> None:
        """Copy a finished job of run `other` (its row and weights file) as record_done saves
        it: the weights file first, then the row. The caller checks that both runs compute
        the same job (config, dataset, split); finished_at stays when it was trained, and
        restarts, kernels, threads and device as recorded (NULL when `other` was written
        before they were)."""
        self._require_writer()
        cursor = other._conn.execute("SELECT * FROM jobs WHERE job_id = ? AND status = 'done'",
                                     (job_id,))
        row = cursor.fetchone()
        if row is None:
            raise LeukolearnError(f"no finished job {job_id!r} in {other.path}")
        values = dict(zip((c[0] for c in cursor.description), row))
        source, weights = other.weights_path(job_id), None
        if source is not None and not source.is_file():
            raise LeukolearnError(f"{source} is missing: job {job_id} cannot be copied")
        try:
            if source is not None:
                weights = values["weights"] = f"weights/{job_id}.safetensors"
                atomic_write(self.path / weights, lambda tmp: shutil.copyfile(source, tmp))
            self._write_row(values)
        except BaseException as exc:  # a full disk, Ctrl-C
            if weights is not None and not self._has_done_row(job_id):
                (self.path / weights).unlink(missing_ok=True)  # no file without its row
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise self._save_error(job_id, exc) from None
            raise

    def _has_done_row(self, job_id: str) -> bool:
        try:
            return self._conn.execute("SELECT 1 FROM jobs WHERE job_id = ? AND status = 'done'",
                                      (job_id,)).fetchone() is not None
        except sqlite3.Error:
            return True  # cannot tell: keep the file (a resume overwrites it if need be)

    def _save_error(self, job_id: str, exc: Exception) -> LeukolearnError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LeukolearnError(
            f"{self.path}: could not save job {job_id} ({reason}); the jobs finished "
            "before it are kept. Fix that (e.g. free disk space), then run the same command "
            "again to resume"
        )

    def _insert(self, job: Job, values: dict[str, Any]) -> None:
        values = {
            "job_id": job.job_id, "fold": job.fold, "size": job.size,
            "replicate": getattr(job, "replicate", 0), "seed": job.seed,
            "train_idx": to_npy(np.asarray(job.train_idx, dtype=np.int64)),
            "val_idx": to_npy(np.asarray(job.val_idx, dtype=np.int64)),
            "test_idx": to_npy(np.asarray(job.test_idx, dtype=np.int64)),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **values,
        }
        self._write_row(values)

    def _write_row(self, values: dict[str, Any]) -> None:
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))
        with self._conn:  # one transaction per job
            self._conn.execute(f"INSERT OR REPLACE INTO jobs ({cols}) VALUES ({marks})",
                               tuple(values.values()))

    def _require_writer(self) -> None:
        if self._lock is None:
            raise LeukolearnError("this run store was opened read-only (RunStore.open)")


def _record(row: tuple) -> JobRecord:
    d = dict(zip(JobRecord.__dataclass_fields__, row))
    d["metric"] = float("nan") if d["metric"] is None else float(d["metric"])
    d["degenerate"] = bool(d["degenerate"])
    d["kernels"] = _optional(d["kernels"], bool)
    return JobRecord(**d)


def _optional(value: Any, convert: Any) -> Any:
    return None if value is None else convert(value)
