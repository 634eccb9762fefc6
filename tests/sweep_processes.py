"""Helpers for tests that run real `python -m leukolearn sweep` processes and stop them:
start one, wait, read its store without writing, compare two runs job by job."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from leukolearn.data.synthetic import make_binary, write_image_folder
from leukolearn.runstore.store import RunStore


def write_cells(root: Path) -> Path:
    """24 synthetic 190 px cells (12 blasts, 12 others) as a class-folder dataset."""
    write_image_folder(make_binary(12, size=190, seed=3), root)
    return root


def one_thread_env(cache: Path) -> dict:
    """The environment of a sweep subprocess: one thread everywhere (training is then
    bit-for-bit deterministic across processes), and a decode cache shared by the processes
    of one test module."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "LEUKOLEARN_CACHE": str(cache)}


def with_jobs(args, jobs):
    """`args` with --jobs set to `jobs`."""
    at = args.index("--jobs")
    return [*args[:at + 1], str(jobs), *args[at + 2:]]


def start(env, data, out, args) -> subprocess.Popen:
    # SIGINT at its default: a process started in the background by a non-interactive
    # shell (as a CI job may be) inherits it ignored, and Python then installs no Ctrl-C
    # handler, so the Ctrl-C test would test the caller's shell instead of the sweep.
    return subprocess.Popen(
        [sys.executable, "-m", "leukolearn", "sweep", "folder", str(data), "--out", str(out),
         *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, proc, timeout=300.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} first: {proc.stderr.read()}")
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.02)


def weights_files(run: Path) -> set[str]:
    folder = run / "weights"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def done_rows(run: Path) -> int:
    """Finished jobs, read without writing (a sweep may be running)."""
    if not (run / "run.sqlite").exists():
        return 0
    conn = sqlite3.connect(f"file:{run / 'run.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM jobs WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0
    finally:
        conn.close()


def assert_consistent(run: Path) -> list[str]:
    """Integrity, one row per job, a weights file for every row and nothing else in
    weights/ (no temp file, no file without its row); returns the finished job ids."""
    conn = sqlite3.connect(run / "run.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        total, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM jobs").fetchone()
        assert total == distinct
    finally:
        conn.close()
    with RunStore.open(run) as store:
        records = store.results(include_failed=True)
        assert all(r.status == "done" for r in records)
        ids = sorted(r.job_id for r in records)
        for job_id in ids:
            assert store.weights_path(job_id).is_file()
    assert weights_files(run) == {f"{i}.safetensors" for i in ids}
    assert not (run / "run.sqlite-journal").exists()
    return ids


def snapshot(run: Path) -> dict:
    """Per job: metric, test indices and probabilities, and the saved weights."""
    from safetensors.numpy import load_file

    with RunStore.open(run) as store:
        out = {}
        for r in store.results():
            pred = store.predictions(r.job_id)
            # The tensors, not the file's bytes: safetensors orders its metadata at random.
            out[r.job_id] = (r.metric, pred.test_idx, pred.probs,
                             load_file(store.weights_path(r.job_id)))
        return out


def assert_same_results(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for job_id in a:
        (ma, ia, pa, wa), (mb, ib, pb, wb) = a[job_id], b[job_id]
        assert ma == mb or (np.isnan(ma) and np.isnan(mb)), job_id
        np.testing.assert_array_equal(ia, ib, err_msg=job_id)
        np.testing.assert_array_equal(pa, pb, err_msg=job_id)  # exact, not approximate
        assert wa.keys() == wb.keys(), job_id
        for name in wa:
            np.testing.assert_array_equal(wa[name], wb[name], err_msg=f"{job_id} {name}")


def interrupt_once_some_jobs_are_saved(proc, run: Path, total: int) -> None:
    """Send Ctrl-C's SIGINT (to the parent only: a terminal would signal the workers too,
    and they ignore it) once at least one of `total` jobs is saved and some are left. The
    count is read while the sweep is stopped (SIGSTOP), so no job can finish between the
    check and the signal, however loaded the machine: no timing decides the outcome."""
    end = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} first: {proc.stderr.read()}")
        proc.send_signal(signal.SIGSTOP)
        if 1 <= done_rows(run) < total:
            proc.send_signal(signal.SIGINT)  # pending until it runs again
            proc.send_signal(signal.SIGCONT)
            return
        proc.send_signal(signal.SIGCONT)
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)
