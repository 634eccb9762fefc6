"""The run directory: everything needed to redraw a figure without training again.

    RUN/
      config.json     the SweepConfig (written last at creation: its presence marks a run)
      dataset.json    name, root, fingerprint, image count, class names and counts, load options
      versions.json   leukolearn, torch, numpy, python at creation
      run.sqlite      one row per job (schema below) plus the image table
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
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import io
import json
import os
import platform
import sqlite3
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from leukolearn.errors import LeukolearnError

if TYPE_CHECKING:  # pragma: no cover
    from leukolearn.cellimages import CellImages
    from leukolearn.presets import SweepConfig
    from leukolearn.protocol import Job
    from leukolearn.sweep import JobOutcome

SCHEMA_VERSION = 1
_OWN_FILES = {"config.json", "dataset.json", "versions.json", "run.sqlite", "run.sqlite-journal",
              "weights", ".lock", "summary.csv"}
# Left by a process killed while writing one of the JSON files (see _write_json).
_OWN_FILES |= {f".{name}.tmp" for name in ("config.json", "dataset.json", "versions.json")}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    idx      INTEGER PRIMARY KEY,   -- index into the CellImages the plan was made on
    image_id TEXT NOT NULL,
    label    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,   -- "f03-n120-s0"
    fold        INTEGER NOT NULL,
    size        INTEGER NOT NULL,   -- training images
    replicate   INTEGER NOT NULL,
    seed        INTEGER NOT NULL,   -- the training seed
    status      TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    metric_name TEXT,               -- 'auc' or 'weighted_f1'
    metric      REAL,               -- NULL when undefined (e.g. AUC of a one-class test set)
    best_epoch  INTEGER,
    epochs_run  INTEGER,
    seconds     REAL,
    degenerate  INTEGER,            -- 1: constant predictions on validation
    error       TEXT,               -- failed jobs: "ExceptionType: message"
    train_idx   BLOB, val_idx BLOB, test_idx BLOB,  -- int64 .npy bytes
    test_labels BLOB,               -- int64 .npy
    test_probs  BLOB,               -- float32 .npy (n_test, n_classes)
    history     TEXT,               -- JSON: [{epoch, train_loss, val_loss, seconds}, ...]
    weights     TEXT,               -- path relative to the run dir; NULL if no model was kept
    finished_at TEXT NOT NULL       -- UTC, ISO 8601
);
"""


@dataclass(frozen=True)
class DatasetInfo:
    """What the plan's indices point into; the fingerprint decides whether a run can resume."""

    name: str
    root: str
    fingerprint: str
    n_images: int
    class_names: tuple[str, ...]
    class_counts: dict[str, int] = field(default_factory=dict)
    load_options: dict[str, Any] = field(default_factory=dict)  # size, positive, label table, dedupe
    dropped_classes: dict[str, int] = field(default_factory=dict)  # left out (too few images)

    @classmethod
    def from_cells(cls, cells: "CellImages", name: str = "", root: str | Path = "", *,
                   load_options: Mapping[str, Any] | None = None,
                   dropped_classes: Mapping[str, int] | None = None) -> "DatasetInfo":
        return cls(
            name=name, root=str(root), fingerprint=cells.fingerprint, n_images=len(cells),
            class_names=cells.class_names, class_counts=cells.class_counts(),
            load_options=dict(load_options or {}), dropped_classes=dict(dropped_classes or {}),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetInfo":
        d = dict(d)
        d["class_names"] = tuple(d["class_names"])
        return cls(**d)


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
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
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
        cols = ", ".join(JobRecord.__dataclass_fields__)
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
            })
        except BaseException as exc:  # a full disk, Ctrl-C
            if weights is not None and not self._has_done_row(job.job_id):
                (self.path / weights).unlink(missing_ok=True)  # no file without its row
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise self._save_error(job, exc) from None
            raise

    def record_failed(self, job: "Job", message: str) -> None:
        """Note a job that raised; it stays unfinished, so a resume runs it again."""
        self._require_writer()
        try:
            self._insert(job, {"status": "failed", "error": message})
        except (OSError, sqlite3.Error) as exc:
            raise self._save_error(job, exc) from None

    def _has_done_row(self, job_id: str) -> bool:
        try:
            return self._conn.execute("SELECT 1 FROM jobs WHERE job_id = ? AND status = 'done'",
                                      (job_id,)).fetchone() is not None
        except sqlite3.Error:
            return True  # cannot tell: keep the file (a resume overwrites it if need be)

    def _save_error(self, job: "Job", exc: Exception) -> LeukolearnError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LeukolearnError(
            f"{self.path}: could not save job {job.job_id} ({reason}); the jobs finished "
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
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))
        with self._conn:  # one transaction per job
            self._conn.execute(f"INSERT OR REPLACE INTO jobs ({cols}) VALUES ({marks})",
                               tuple(values.values()))

    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise LeukolearnError("this run store was opened read-only (RunStore.open)")


# ---- helpers --------------------------------------------------------------------------------
def current_versions() -> dict[str, str]:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"leukolearn": pkg("leukolearn"), "torch": pkg("torch"), "numpy": np.__version__,
            "python": platform.python_version()}


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
    stored = _upgrade(json.loads((path / "config.json").read_text()))
    diffs = [d for d in _diff(stored, config) if d[0] not in _RESULT_NEUTRAL]
    if diffs:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:5])
        more = f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise LeukolearnError(
            f"{path} holds a run with different settings ({shown}{more}); "
            "re-run with the original options to resume, or choose a new --out"
        )
    old = DatasetInfo.from_dict(json.loads((path / "dataset.json").read_text()))
    if old.fingerprint != dataset.fingerprint:
        raise LeukolearnError(
            f"{path} holds a run on another dataset ({old.name or '?'}: {old.n_images} images, "
            f"fingerprint {old.fingerprint[:12]}) than this one ({dataset.name or '?'}: "
            f"{dataset.n_images} images, fingerprint {dataset.fingerprint[:12]}); "
            "choose a new --out"
        )


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


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _write_weights(model: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.safetensors")
    try:
        if isinstance(model, Mapping):  # a plain state dict
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in model.items()}, str(tmp))
        else:  # a leukolearn model: its ModelConfig goes into the file's metadata
            from leukolearn.model import save_model

            save_model(model, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written file must not take space or linger
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries (so a rename survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _from_npy(b: bytes) -> np.ndarray:
    try:  # allow_pickle=False: an array stored as a pickle is refused, never unpickled
        return np.load(io.BytesIO(b), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as exc:
        raise LeukolearnError(f"run.sqlite holds a damaged or unsafe array ({exc})") from None


def _plain(x: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and lists, for JSON."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _record(row: tuple) -> JobRecord:
    d = dict(zip(JobRecord.__dataclass_fields__, row))
    d["metric"] = float("nan") if d["metric"] is None else float(d["metric"])
    d["degenerate"] = bool(d["degenerate"])
    return JobRecord(**d)
