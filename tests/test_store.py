"""The run directory: round trips, refusals (config, dataset, lock, foreign folder), atomicity,
old schemas."""
import dataclasses
import json
import math
import sqlite3

import numpy as np
import pytest
import torch

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.protocol import ProtocolOptions, make_plan
from leukolearn.runstore.store import DatasetInfo, RunStore
from leukolearn.analysis.summary import summarize_store
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import load_model

CONFIG = {"protocol": "all", "options": {"folds": 4, "sizes": [4, 8]}, "metric": "auc"}


def tiny_cells(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return CellImages(rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8), np.arange(n) % 2,
                      ("other", "blast"), tuple(f"img{i}" for i in range(n)))


def info(cells):
    return DatasetInfo.from_cells(cells, "synthetic", "/nowhere")


def outcome(job, metric=0.75):
    probs = np.tile([[0.3, 0.7]], (len(job.test_idx), 1))
    return JobOutcome(metric=metric, best_epoch=3, epochs_run=5, seconds=0.1, degenerate=False,
                      test_probs=probs, history=[{"epoch": 1, "val_loss": np.float32(0.5)}],
                      model=tiny_model())


def tiny_model():
    """A real (tiny) network: the store writes weights only as load_model reads them."""
    return build_model(ModelConfig(input_size=8, filters=(2,), hidden=2), seed=3)


@pytest.fixture
def cells():
    return tiny_cells()


@pytest.fixture
def plan(cells):
    return make_plan("all", cells.labels, ProtocolOptions(folds=4, sizes=(4, 8)))


def test_round_trip(tmp_path, cells, plan):
    job = plan[0]
    with RunStore.create_or_resume(tmp_path / "run", config=CONFIG, dataset=info(cells), cells=cells) as store:
        store.record_done(job, outcome(job), cells.labels[list(job.test_idx)])
    for name in ("config.json", "dataset.json", "versions.json", "run.sqlite"):
        assert (tmp_path / "run" / name).exists()
    assert set(json.loads((tmp_path / "run/versions.json").read_text())) == {"leukolearn", "torch", "numpy", "python"}
    with RunStore.open(tmp_path / "run") as store:
        assert store.config_dict == CONFIG
        assert store.dataset_info.fingerprint == cells.fingerprint
        assert store.finished_ids() == {job.job_id}
        (record,) = store.results()
        assert (record.fold, record.size, record.seed, record.metric) == (job.fold, job.size, job.seed, 0.75)
        assert (record.best_epoch, record.epochs_run, record.degenerate) == (3, 5, False)
        pred = store.predictions(job.job_id)
        assert pred.test_idx.tolist() == list(job.test_idx)
        assert pred.labels.tolist() == cells.labels[list(job.test_idx)].tolist()
        assert pred.probs.shape == (len(job.test_idx), 2) and pred.probs.dtype == np.float32
        assert store.history(job.job_id) == [{"epoch": 1, "val_loss": 0.5}]
        train, val, test = store.split(job.job_id)
        assert train.tolist() == list(job.train_idx) and val.tolist() == list(job.val_idx)
        saved = load_model(store.weights_path(job.job_id)).state_dict()
        for name, value in tiny_model().state_dict().items():
            assert torch.equal(saved[name], value), name
        assert store.image_ids()[:2] == ["img0", "img1"]
        assert store.image_labels().tolist() == cells.labels.tolist()
        with pytest.raises(LeukolearnError, match="read-only"):
            store.record_failed(job, "x")


def test_nan_metric_and_failed_rows(tmp_path, cells, plan):
    a, b = plan[0], plan[1]
    with RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells) as store:
        store.record_done(a, outcome(a, metric=float("nan")), cells.labels[list(a.test_idx)])
        store.record_failed(b, "RuntimeError: boom")
        assert store.finished_ids() == {a.job_id}  # a failure is not finished: it runs again
        assert math.isnan(store.results()[0].metric)
        failed = [r for r in store.results(include_failed=True) if r.status == "failed"]
        assert [(r.job_id, r.error) for r in failed] == [(b.job_id, "RuntimeError: boom")]
        store.record_done(b, outcome(b), cells.labels[list(b.test_idx)])  # the retry replaces it
        assert store.finished_ids() == {a.job_id, b.job_id}
        assert all(r.status == "done" for r in store.results(include_failed=True))


def test_changed_config_is_refused_with_what_differs(tmp_path, cells):
    RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells).close()
    changed = {**CONFIG, "options": {"folds": 5, "sizes": [4, 8]}}
    with pytest.raises(LeukolearnError, match=r"options\.folds: 4 -> 5.*new --out"):
        RunStore.create_or_resume(tmp_path, config=changed, dataset=info(cells), cells=cells)
    # same config again resumes
    RunStore.create_or_resume(tmp_path, config=dict(CONFIG), dataset=info(cells), cells=cells).close()


def test_changed_dataset_is_refused(tmp_path, cells):
    RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells).close()
    other = tiny_cells(seed=1)
    with pytest.raises(LeukolearnError, match="another dataset.*new --out"):
        RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(other), cells=other)


def test_a_resume_deletes_what_killed_writers_left_half_written(tmp_path, cells):
    run = tmp_path / "run"
    RunStore.create_or_resume(run, config=CONFIG, dataset=info(cells), cells=cells).close()
    stale = [run / ".config.json.123-abc.tmp", run / "weights" / ".f00-n4-s0.safetensors.9-ff.tmp",
             run / "weights" / ".f00-n8-s0.tmp.safetensors", run / ".dataset.json.tmp",
             run / "weights" / ".tmppTwqyC"]  # safetensors' own
    for path in stale:  # today's unique names and the fixed ones older versions used
        path.write_bytes(b"half")
    keep = run / "weights" / "f00-n4-s0.safetensors"
    keep.write_bytes(b"a finished job's file")
    with RunStore.create_or_resume(run, config=CONFIG, dataset=info(cells), cells=cells):
        assert not any(path.exists() for path in stale)
        assert keep.exists() and (run / "config.json").exists()


def test_lock_refuses_a_second_writer(tmp_path, cells):
    first = RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells)
    with pytest.raises(LeukolearnError, match="being written by another sweep"):
        RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells)
    with RunStore.open(tmp_path) as reader:  # reading while a sweep writes is fine
        assert reader.finished_ids() == set()
    first.close()
    RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells).close()


def test_foreign_directory_is_refused(tmp_path, cells):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(LeukolearnError, match="not a leukolearn run"):
        RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells)
    with pytest.raises(LeukolearnError, match="not a leukolearn run"):
        RunStore.open(tmp_path)


def test_orphan_weights_file_is_overwritten(tmp_path, cells, plan):
    job = plan[0]
    with RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells) as store:
        orphan = tmp_path / "weights" / f"{job.job_id}.safetensors"
        orphan.write_bytes(b"half a file from a crash")  # weights renamed, row never committed
        assert store.finished_ids() == set()
        store.record_done(job, outcome(job), cells.labels[list(job.test_idx)])
        assert load_model(orphan).config.filters == (2,)
        assert not list((tmp_path / "weights").glob(".*tmp*"))


def test_schema_is_one_row_per_job(tmp_path, cells, plan):
    with RunStore.create_or_resume(tmp_path, config=CONFIG, dataset=info(cells), cells=cells) as store:
        for _ in range(2):
            store.record_done(plan[0], outcome(plan[0]), cells.labels[list(plan[0].test_idx)])
    conn = sqlite3.connect(tmp_path / "run.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (1,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert conn.execute("SELECT COUNT(*) FROM images").fetchone() == (len(cells),)


def test_restarts_round_trip_and_copy(tmp_path, cells, plan):
    a, b = plan[0], plan[1]

    def create(path):
        return RunStore.create_or_resume(path, config=CONFIG, dataset=info(cells), cells=cells)

    with create(tmp_path / "one") as store:
        store.record_done(a, dataclasses.replace(outcome(a), restarts=2),
                          cells.labels[list(a.test_idx)])
        store.record_failed(b, "RuntimeError: boom")  # no training finished: not recorded
    with RunStore.open(tmp_path / "one") as source, create(tmp_path / "two") as copy:
        records = source.results(include_failed=True)
        assert {r.job_id: r.restarts for r in records} == {a.job_id: 2, b.job_id: None}
        copy.copy_job_from(source, a.job_id)
        assert [r.restarts for r in copy.results()] == [2]


# run.sqlite's jobs table as versions before schema 2 created it: no restarts column.
_JOBS_V1 = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, fold INTEGER NOT NULL, size INTEGER NOT NULL,
    replicate INTEGER NOT NULL, seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')), metric_name TEXT, metric REAL,
    best_epoch INTEGER, epochs_run INTEGER, seconds REAL, degenerate INTEGER, error TEXT,
    train_idx BLOB, val_idx BLOB, test_idx BLOB, test_labels BLOB, test_probs BLOB,
    history TEXT, weights TEXT, finished_at TEXT NOT NULL
);
"""


# ... and as schema 2 created it: restarts, but not how the job ran (kernels, threads, device).
_JOBS_V2 = _JOBS_V1.replace("finished_at TEXT NOT NULL\n", "finished_at TEXT NOT NULL,\n    restarts INTEGER\n")
assert "restarts" in _JOBS_V2


def make_old_run(path, cells, plan, version=1, restarts=None):
    """A run directory whose run.sqlite has the jobs table of schema `version` (1 or 2), with
    two jobs in it (restarts: what schema 2 recorded for them)."""
    with RunStore.create_or_resume(path, config=CONFIG, dataset=info(cells), cells=cells) as store:
        for job in plan[:2]:
            store.record_done(job, dataclasses.replace(outcome(job), restarts=restarts or 0),
                              cells.labels[list(job.test_idx)])
    conn = sqlite3.connect(path / "run.sqlite")
    with conn:
        conn.execute("ALTER TABLE jobs RENAME TO new_jobs")
        conn.executescript({1: _JOBS_V1, 2: _JOBS_V2}[version])
        cols = ", ".join(row[1] for row in conn.execute("PRAGMA table_info(jobs)"))
        conn.execute(f"INSERT INTO jobs SELECT {cols} FROM new_jobs")
        conn.execute("DROP TABLE new_jobs")
        conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("VACUUM")
    conn.close()


def jobs_columns_and_version(path):
    conn = sqlite3.connect(f"file:{path / 'run.sqlite'}?mode=ro", uri=True)
    try:
        return ({row[1] for row in conn.execute("PRAGMA table_info(jobs)")},
                conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_run_of_an_older_schema_reads_and_resumes(tmp_path, cells, plan):
    run = tmp_path / "run"
    make_old_run(run, cells, plan, version=1)
    before = (run / "run.sqlite").read_bytes()
    assert "restarts" not in jobs_columns_and_version(run)[0]

    with RunStore.open(run) as store:  # read-only: the missing column reads as "not recorded"
        records = store.results()
        assert [r.restarts for r in records] == [None, None]
        assert [r.n_restarted for r in summarize_store(store).rows] == [0, 0]
        with RunStore.create_or_resume(tmp_path / "other", config=CONFIG, dataset=info(cells),
                                       cells=cells) as other:
            other.copy_job_from(store, plan[0].job_id)  # from an old run: restarts NULL
            assert [r.restarts for r in other.results()] == [None]
    assert (run / "run.sqlite").read_bytes() == before  # reading wrote nothing

    with RunStore.create_or_resume(run, config=CONFIG, dataset=info(cells), cells=cells) as store:
        columns, version = jobs_columns_and_version(run)
        assert {"restarts", "kernels", "threads", "device"} <= columns and version == 3
        assert store.finished_ids() == {j.job_id for j in plan[:2]}  # no row lost
        job = plan[2]
        store.record_done(job, dataclasses.replace(outcome(job), restarts=1),
                          cells.labels[list(job.test_idx)])
    with RunStore.open(run) as store:
        assert {r.job_id: r.restarts for r in store.results()} == {
            plan[0].job_id: None, plan[1].job_id: None, job.job_id: 1}
        assert store.predictions(plan[0].job_id).probs.shape == (len(plan[0].test_idx), 2)
    # An older version resuming the migrated run writes user_version 1 back; the column is
    # there, so the next migration only restores the number.
    conn = sqlite3.connect(run / "run.sqlite")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    RunStore.create_or_resume(run, config=CONFIG, dataset=info(cells), cells=cells).close()
    assert jobs_columns_and_version(run)[1] == 3


def ran_as(record):
    return record.kernels, record.threads, record.device


def test_how_a_job_ran_round_trips_and_copies(tmp_path, cells, plan):
    a, b = plan[0], plan[1]

    def create(path):
        return RunStore.create_or_resume(path, config=CONFIG, dataset=info(cells), cells=cells)

    with create(tmp_path / "one") as store:
        store.record_done(a, dataclasses.replace(outcome(a), kernels=True, threads=3,
                                                 device="cpu"), cells.labels[list(a.test_idx)])
        store.record_done(b, outcome(b), cells.labels[list(b.test_idx)])  # a runner that does not say
        store.record_failed(plan[2], "RuntimeError: boom")
    with RunStore.open(tmp_path / "one") as source, create(tmp_path / "two") as copy:
        got = {r.job_id: ran_as(r) for r in source.results(include_failed=True)}
        assert got == {a.job_id: (True, 3, "cpu"), b.job_id: (None, None, None),
                       plan[2].job_id: (None, None, None)}
        assert type(got[a.job_id][0]) is bool
        copy.copy_job_from(source, a.job_id)
        assert [ran_as(r) for r in copy.results()] == [(True, 3, "cpu")]


def test_a_schema_2_run_gains_the_columns_of_how_jobs_ran(tmp_path, cells, plan):
    run = tmp_path / "run"
    make_old_run(run, cells, plan, version=2, restarts=1)
    columns, version = jobs_columns_and_version(run)
    assert version == 2 and "restarts" in columns and "kernels" not in columns
    before = (run / "run.sqlite").read_bytes()
    with RunStore.open(run) as store:  # read-only: the new columns read as "not recorded"
        assert [(r.restarts, *ran_as(r)) for r in store.results()] == [(1, None, None, None)] * 2
    assert (run / "run.sqlite").read_bytes() == before

    with RunStore.create_or_resume(run, config=CONFIG, dataset=info(cells), cells=cells) as store:
        assert jobs_columns_and_version(run)[1] == 3
        job = plan[2]
        store.record_done(job, dataclasses.replace(outcome(job), kernels=False, threads=1,
                                                   device="cuda"),
                          cells.labels[list(job.test_idx)])
    with RunStore.open(run) as store:
        assert {r.job_id: (r.restarts, *ran_as(r)) for r in store.results()} == {
            plan[0].job_id: (1, None, None, None), plan[1].job_id: (1, None, None, None),
            job.job_id: (0, False, 1, "cuda")}
    # A migrated file has a new file's columns, in a new file's order.
    RunStore.create_or_resume(tmp_path / "new", config=CONFIG, dataset=info(cells),
                              cells=cells).close()
    order = []
    for path in (run, tmp_path / "new"):
        conn = sqlite3.connect(path / "run.sqlite")
        order.append([row[1] for row in conn.execute("PRAGMA table_info(jobs)")])
        conn.close()
    assert order[0] == order[1]
