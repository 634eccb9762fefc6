"""The run directory: everything needed to redraw a figure without training again.

    RUN/
      config.json     the SweepConfig (written last at creation: its presence marks a run)
      dataset.json    name, root, fingerprint, image count, class names and counts, load options
      versions.json   leukolearn, torch, numpy, python at creation
      run.sqlite      one row per job (schema in store_io) plus the image table
      weights/<job_id>.safetensors
      .lock           held (flock) by the one process that writes

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

This module holds `RunStore` (opening, reading, writing jobs) and the checks that decide
whether a run may resume; the schema, the dataset/versions records, the array encoding and
the atomic file writes are in `leukolearn.store_io`.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from leukolearn.errors import LeukolearnError
# DatasetInfo and current_versions are imported from here by other modules: keep them here.
from leukolearn.store_io import (_SCHEMA, DatasetInfo, _from_npy, _migrate, _plain,
                                 _replace_file, _to_npy, _write_json, _write_weights,
                                 current_versions)

if TYPE_CHECKING:  # pragma: no cover
    from leukolearn.cellimages import CellImages
    from leukolearn.presets import SweepConfig
    from leukolearn.protocol import Job
    from leukolearn.sweep import JobOutcome

_OWN_FILES = {"config.json", "dataset.json", "versions.json", "run.sqlite", "run.sqlite-journal",
              "weights", ".lock", "summary.csv"}
# Left by a process killed while writing one of the JSON files (see store_io._write_json).
_OWN_FILES |= {f".{name}.tmp" for name in ("config.json", "dataset.json", "versions.json")}


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


@dataclass(frozen=True)
class Predictions:
    test_idx: np.ndarray  # (n,) int64 indices into the CellImages
    labels: np.ndarray  # (n,) int64
    probs: np.ndarray  # (n, n_classes) float32


class RunStore:
    """A run directory. `create_or_resume` to write (takes the lock), `open` to read."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None = None):
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, path: str | Path, *, config: "SweepConfig | Mapping[str, Any]",
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
            _refuse_foreign(path)  # before the lock file: leave a user's folder untouched
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = _acquire_lock(path)
        try:
            config_dict = _normalise(config.to_dict() if hasattr(config, "to_dict") else dict(config))
            if (path / "config.json").exists():
                _check_same(path, config_dict, dataset)
                # A resume may run more (or fewer) of the same folds: the stored config says
                # what was asked last, and fold f's jobs are the same either way.
                if _diff(json.loads((path / "config.json").read_text()), config_dict):
                    _write_json(path / "config.json", config_dict)
            else:
                _refuse_foreign(path)
                # config.json last: its presence means the other two are complete.
                _write_json(path / "dataset.json", dataset.to_dict())
                _write_json(path / "versions.json", current_versions())
                _write_json(path / "config.json", config_dict)
            (path / "weights").mkdir(exist_ok=True)
            conn = sqlite3.connect(path / "run.sqlite", timeout=30)
            conn.execute("PRAGMA synchronous = FULL")
            with conn:
                conn.executescript(_SCHEMA)
                _migrate(conn)  # a run written by an older version gains the new columns
                if cells is not None and not conn.execute("SELECT 1 FROM images LIMIT 1").fetchone():
                    conn.executemany(
                        "INSERT INTO images VALUES (?, ?, ?)",
                        zip(range(len(cells)), cells.image_ids, cells.labels.tolist()),
                    )
        except (OSError, sqlite3.Error) as exc:  # a full disk, a damaged run.sqlite
            os.close(lock_fd)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise LeukolearnError(f"{path}: cannot write the run directory ({reason})") from None
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, conn, lock_fd)

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
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading -------------------------------------------------------------------------
    @property
    def config_dict(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @property
    def config(self) -> "SweepConfig":
        from leukolearn.presets import SweepConfig

        return SweepConfig.from_dict(self.config_dict)

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
        return Predictions(*(_from_npy(b) for b in row))

    def history(self, job_id: str) -> list[dict]:
        return json.loads(self._row(job_id, "history")[0])

    def split(self, job_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train_idx, val_idx, test_idx) of a job, e.g. to embed the images left out of training."""
        return tuple(_from_npy(b) for b in self._row(job_id, "train_idx, val_idx, test_idx"))

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
    def record_done(self, job: "Job", outcome: "JobOutcome", test_labels: np.ndarray) -> None:
        """Save one finished job: weights file first, then its row in one transaction."""
        self._require_writer()
        weights = None
        metric = float(outcome.metric)
        try:
            if outcome.model is not None:
                weights = f"weights/{job.job_id}.safetensors"
                _write_weights(outcome.model, self.path / weights)
            self._insert(job, {
                "status": "done", "metric_name": outcome.metric_name,
                "metric": None if np.isnan(metric) else metric,
                "best_epoch": int(outcome.best_epoch), "epochs_run": int(outcome.epochs_run),
                "seconds": float(outcome.seconds), "degenerate": int(bool(outcome.degenerate)),
                "test_labels": _to_npy(np.asarray(test_labels, dtype=np.int64)),
                "test_probs": _to_npy(np.asarray(outcome.test_probs, dtype=np.float32)),
                "history": json.dumps(_plain(outcome.history)), "weights": weights,
                "restarts": int(outcome.restarts),
            })
        except BaseException as exc:  # a full disk, Ctrl-C
            if weights is not None and not self._has_done_row(job.job_id):
                (self.path / weights).unlink(missing_ok=True)  # no file without its row
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise self._save_error(job.job_id, exc) from None
            raise

    def record_failed(self, job: "Job", message: str) -> None:
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
        restarts as recorded (NULL when `other` was written before they were)."""
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
                _replace_file(self.path / weights, lambda tmp: shutil.copyfile(source, tmp))
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

    def _insert(self, job: "Job", values: dict[str, Any]) -> None:
        values = {
            "job_id": job.job_id, "fold": job.fold, "size": job.size,
            "replicate": getattr(job, "replicate", 0), "seed": job.seed,
            "train_idx": _to_npy(np.asarray(job.train_idx, dtype=np.int64)),
            "val_idx": _to_npy(np.asarray(job.val_idx, dtype=np.int64)),
            "test_idx": _to_npy(np.asarray(job.test_idx, dtype=np.int64)),
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
        if self._lock_fd is None:
            raise LeukolearnError("this run store was opened read-only (RunStore.open)")


# ---- the writer's lock and the resume checks ------------------------------------------------
def _acquire_lock(path: Path) -> int:
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LeukolearnError(
            f"{path} is being written by another sweep (pid {holder}); wait for it to finish "
            "or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _check_same(path: Path, config: dict, dataset: DatasetInfo) -> None:
    diffs = config_differences(json.loads((path / "config.json").read_text()), config)
    if diffs:
        raise LeukolearnError(
            f"{path} holds a run with different settings ({describe_differences(diffs)}); "
            "re-run with the original options to resume, or choose a new --out"
        )
    old = DatasetInfo.from_dict(json.loads((path / "dataset.json").read_text()))
    if old.fingerprint != dataset.fingerprint:
        raise LeukolearnError(
            f"{path} holds a run on another dataset ({describe_dataset(old)}) than this one "
            f"({describe_dataset(dataset)}); choose a new --out"
        )


def config_differences(stored: Mapping[str, Any], config: Mapping[str, Any],
                       also_neutral: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(setting, stored value, new value) for each setting in which `config` computes other
    results than a run's stored config; `also_neutral` names more settings to ignore (e.g.
    "options.sizes" when only jobs present in both are compared)."""
    neutral = _RESULT_NEUTRAL | set(also_neutral)
    return [d for d in _diff(_upgrade(dict(stored)), _normalise(config)) if d[0] not in neutral]


def describe_differences(diffs: list[tuple[str, Any, Any]]) -> str:
    shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:5])
    return shown + (f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else "")


def describe_dataset(info: DatasetInfo) -> str:
    return f"{info.name or '?'}: {info.n_images} images, fingerprint {info.fingerprint[:12]}"


# Settings free to differ on resume: how fast a job runs (threads, device), not what it
# computes, and how many of the folds are run (fold f's jobs do not depend on it, see
# leukolearn.protocol), so a run of 3 folds can be extended to all 10.
_RESULT_NEUTRAL = {"train.threads", "train.device", "options.run_folds"}


def _upgrade(stored: dict) -> dict:
    """A stored config as this version writes it: settings added since it was stored take
    their defaults (which reproduce the old behaviour), so an upgrade can still resume."""
    from leukolearn.presets import SweepConfig

    try:
        return _normalise(SweepConfig.from_dict(stored).to_dict())
    except (TypeError, KeyError, ValueError):
        return stored  # unreadable as a SweepConfig: compare as stored, the diff will say why


def _refuse_foreign(path: Path) -> None:
    foreign = sorted(p.name for p in path.iterdir() if p.name not in _OWN_FILES)
    if foreign:
        raise LeukolearnError(
            f"{path} is not empty and is not a leukolearn run (it holds {foreign[0]!r}); "
            "choose a new --out"
        )


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _normalise(d: Mapping[str, Any]) -> dict:
    # Through JSON once, so tuples become lists and a fresh config compares equal to a stored one.
    return json.loads(json.dumps(d))


def _record(row: tuple) -> JobRecord:
    d = dict(zip(JobRecord.__dataclass_fields__, row))
    d["metric"] = float("nan") if d["metric"] is None else float(d["metric"])
    d["degenerate"] = bool(d["degenerate"])
    return JobRecord(**d)
