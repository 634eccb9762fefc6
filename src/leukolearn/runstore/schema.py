"""What a run directory's files hold: the SQLite schema of run.sqlite and its upgrades,
the dataset record (dataset.json), and the encodings of arrays and weights.

- `SCHEMA`, `SCHEMA_VERSION`, and `migrate`, which upgrades a run written by an older
  version in place;
- `DatasetInfo`, written to dataset.json: what the plan's indices point into;
- `to_npy` / `from_npy`: arrays as .npy bytes for the BLOB columns (never pickled);
- `write_weights`: a job's weights file, as `model.weights.save_model` writes it (atomically).
"""
from __future__ import annotations

import io
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from leukolearn.errors import LeukolearnError

if TYPE_CHECKING:  # pragma: no cover
    from leukolearn.data.cellimages import CellImages

# PRAGMA user_version of run.sqlite. 1: the first schema; 2: jobs.restarts; 3: jobs.kernels,
# jobs.threads and jobs.device.
SCHEMA_VERSION = 3

SCHEMA = """
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
    finished_at TEXT NOT NULL,      -- UTC, ISO 8601
    -- The columns below are last, in the order ALTER TABLE adds them to a migrated run, so
    -- new and migrated files have the same column order. NULL: not recorded (a failed job,
    -- or a row written before the column existed).
    -- Dead networks re-initialised before the kept one (TrainConfig.restarts). Schema 2.
    restarts    INTEGER,
    -- How the job ran (schema 3), which the speed and the last float bits depend on:
    -- 1 if the fused C kernels did the conv blocks (model.kernels), 0 if PyTorch's layers;
    kernels     INTEGER,
    threads     INTEGER,            -- torch intra-op threads in the process that trained it
    device      TEXT                -- 'cpu', 'cuda', ...
);
"""

# Columns added since schema 1, as `migrate` adds them to an older run.sqlite, in order.
_ADDED_COLUMNS = {"restarts": "INTEGER", "kernels": "INTEGER", "threads": "INTEGER",
                  "device": "TEXT"}


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a run.sqlite written by an older version up to this schema, in place: the
    columns added since get NULL in existing rows ("not recorded"), which every reader
    accepts, so a run can be resumed across an upgrade. Run after `SCHEMA`, which creates
    the tables of a new run but leaves existing ones as they are. Each step is atomic and
    harmless to repeat, so a crash in between leaves a file the next open finishes.

    The columns present decide, not user_version alone: an older version resuming a
    migrated run writes its own, lower, user_version back. A higher user_version (a newer
    version's file) is left as it is."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


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


def write_weights(model: Any, path: Path) -> None:
    """A job's weights file, as `model.weights.save_model` writes it (atomically, its
    ModelConfig in the metadata, so `load_model` reads it back); a failed write (a full
    disk) raises OSError naming `path` (safetensors' own SafetensorError is turned into one
    by `model.weights`), which the store reports as the job it could not save."""
    from leukolearn.model.weights import save_model

    save_model(model, path)


def to_npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def from_npy(b: bytes) -> np.ndarray:
    try:  # allow_pickle=False: an array stored as a pickle is refused, never unpickled
        return np.load(io.BytesIO(b), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as exc:
        raise LeukolearnError(f"run.sqlite holds a damaged or unsafe array ({exc})") from None


