"""Faults during a real sweep: SIGKILL at random moments, Ctrl-C, a full disk, a second sweep.

Real `python -m leukolearn sweep` processes on 24 synthetic 190 px cells: 4 jobs of at most
2 epochs for the quick tests, 36 jobs of at most 12 epochs (under a second each) for the
slow SIGKILL test. Every subprocess runs with one thread (OMP_NUM_THREADS=1) and --jobs 1,
so training is bit-for-bit deterministic across processes and a resumed run can be
compared with an uninterrupted one exactly.
"""
from __future__ import annotations

import errno
import fcntl
import os
import random
import re
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from leukolearn.cli import main
from leukolearn.runstore.store import RunStore
from sweep_processes import (one_thread_env, write_cells, assert_consistent, assert_same_results, done_rows,
                             interrupt_once_some_jobs_are_saved, snapshot, start, wait_for,
                             with_jobs)

COMMON = ["--preset", "quick", "--folds", "3", "--size", "190", "--positive", "blast",
          "--max-epochs", "2", "--patience", "1", "--keep-duplicates", "--no-progress",
          "--jobs", "1", "--seed", "7"]
SMALL = [*COMMON, "--run-folds", "2", "--sizes", "2,4"]  # 4 jobs
SMALL_JOBS = 4
KILL = [*COMMON, "--run-folds", "3", "--sizes", "2,4,6,8", "--replicates", "3",  # 36 jobs
        "--max-epochs", "12", "--patience", "12"]  # about a second each
KILL_JOBS = 36
N_KILLS = 20


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cells(tmp_path_factory.mktemp("cells"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return one_thread_env(tmp_path_factory.mktemp("cache"))


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(data, env, tmp_path):
    # An uninterrupted run, timed, to aim the kills.
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    proc = start(env, data, ref, KILL)
    wait_for(lambda: done_rows(ref) >= 1, proc)
    startup = time.monotonic() - t0  # imports, decoding, opening the store, the first job
    _, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err
    per_job = (time.monotonic() - t0 - startup) / (KILL_JOBS - 1)
    assert len(assert_consistent(ref)) == KILL_JOBS

    rng = random.Random(20210418)
    run = tmp_path / "run"
    kills = []  # per kill: (moment, store existed, a transaction was open, finished jobs)
    for kill in range(N_KILLS):
        before = done_rows(run)
        launched = time.monotonic()
        proc = start(env, data, run, KILL)
        if kill == 0 or rng.random() < 0.35:  # in start-up: imports, loading, the store
            moment, delay = "start-up", rng.uniform(0.1, 1.0) * startup
        else:  # inside a later job: its training, its weights file or its commit
            wait_for(lambda: done_rows(run) > before, proc, timeout=600)
            startup = time.monotonic() - launched  # a resume starts faster (decoded once)
            moment, delay = "in a job", rng.uniform(0.0, 1.0) * per_job
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        else:
            pytest.fail(f"sweep ended by itself before kill {kill + 1} (rc {proc.returncode}): "
                        f"{proc.stderr.read()}")
        hot = (run / "run.sqlite-journal").exists()  # killed inside a transaction
        kills.append((moment, (run / "config.json").exists(), hot,
                      None if hot else done_rows(run)))

    proc = start(env, data, run, KILL)  # the last resume, left to finish
    _, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err
    done, already = map(int, re.search(r"(\d+) jobs done, (\d+) already in", err).groups())
    assert done + already == KILL_JOBS and 0 < already < KILL_JOBS
    assert len(assert_consistent(run)) == KILL_JOBS
    assert_same_results(snapshot(ref), snapshot(run))
    print(f"\n{N_KILLS} SIGKILLs survived: {sum(k[0] == 'start-up' for k in kills)} in start-up, "
          f"{sum(k[0] == 'in a job' for k in kills)} in a job, {sum(k[2] for k in kills)} inside "
          f"a transaction, {sum(not k[1] for k in kills)} before the store existed; finished "
          f"jobs after each kill: {[k[3] for k in kills]}; {done} of {KILL_JOBS} left for the "
          f"last run (first job after {startup:.1f} s, then {per_job:.2f} s per job)")


@pytest.mark.parametrize("jobs, start_method", [
    pytest.param(1, None, marks=pytest.mark.slow), pytest.param(2, "fork", marks=pytest.mark.slow),
    pytest.param(2, "spawn", marks=pytest.mark.slow),
    pytest.param(2, "ray", marks=pytest.mark.slow, id="2-ray-executor")])
def test_ctrl_c_keeps_finished_jobs_and_says_how_to_resume(data, env, tmp_path, jobs,
                                                           start_method):
    args = with_jobs(KILL, jobs)
    if start_method == "ray":  # Ray tasks instead of local processes: the same behaviour
        args = [*args, "--executor", "ray"]
    elif start_method is not None:
        env = {**env, "LEUKOLEARN_START_METHOD": start_method}
    run = tmp_path / "run"
    proc = start(env, data, run, args)
    interrupt_once_some_jobs_are_saved(proc, run, KILL_JOBS)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    command = shlex.join(["sweep", "folder", str(data), "--out", str(run), *args])
    assert err.strip().splitlines()[-1] == ("interrupted; finished jobs are saved. Resume "
                                            f"with the same command: leukolearn {command}")
    kept = assert_consistent(run)
    assert 1 <= len(kept) < KILL_JOBS


@pytest.mark.slow
def test_second_sweep_on_a_run_is_refused_while_the_first_writes(data, env, tmp_path):
    run = tmp_path / "run"
    first = start(env, data, run, SMALL)
    try:
        wait_for(lambda: (run / "run.sqlite").exists(), first)  # it holds the lock by now
        first.send_signal(signal.SIGSTOP)  # keep it holding the lock while the second starts
        config = (run / "config.json").read_bytes()
        second = start(env, data, run, SMALL)
        _, err = second.communicate(timeout=300)
        assert first.poll() is None
        assert second.returncode == 2
        assert err.strip().splitlines() == [
            f"error: {run} is being written by another sweep; "
            "wait for it to finish or choose another --out"]
        assert (run / "config.json").read_bytes() == config
    finally:
        first.send_signal(signal.SIGCONT)
        first.kill()
        first.communicate()
    fd = os.open(run / ".lock", os.O_RDWR)  # the lock died with its process
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def run_cli(args, capsys):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


class _CommitFails:
    """A sqlite3 connection whose commits fail as SQLite's do on a full disk."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __enter__(self):
        return self._conn.__enter__()

    def __exit__(self, *exc):
        if exc[0] is None:
            self._conn.rollback()
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.__exit__(*exc)


# safetensors' own error on a full disk (its message as 0.8 words it), which it raises
# instead of an OSError: it once reached the user as a 40-line traceback.
FULL_DISK_ERRORS = {
    "OSError": lambda filename: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename),
    "SafetensorError": lambda filename: __import__("safetensors").SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"),
}


@pytest.mark.parametrize("error", FULL_DISK_ERRORS)
def test_full_disk_loses_no_finished_job(data, tmp_path, monkeypatch, capsys, error):
    import safetensors.torch

    run = tmp_path / "run"
    args = ["sweep", "folder", data, "--out", run, *SMALL]

    # 1. The disk fills while the second job's weights are written: half a file, ENOSPC.
    real_save = safetensors.torch.save_file
    calls = []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            Path(filename).write_bytes(b"\0" * 1000)
            raise FULL_DISK_ERRORS[error](filename)
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    code, err = run_cli(args, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"error: {run}: could not save job f00-n4-s0 (No space left on device); the jobs "
        "finished before it are kept. Fix that (e.g. free disk space), then run the same "
        "command again to resume"]
    assert assert_consistent(run) == ["f00-n2-s0"]
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)

    # 2. Resumed on a still full disk: the weights fit, the database commit does not.
    real_init = RunStore.__init__

    def init(self, path, conn, lock_fd=None):
        real_init(self, path, _CommitFails(conn) if lock_fd is not None else conn, lock_fd)

    monkeypatch.setattr(RunStore, "__init__", init)
    code, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "could not save job f00-n4-s0 (database or disk is full)" in err
    assert assert_consistent(run) == ["f00-n2-s0"]  # and f00-n4-s0's weights were removed
    monkeypatch.setattr(RunStore, "__init__", real_init)

    # 3. Space freed: the same command completes the run.
    code, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"{SMALL_JOBS - 1} jobs done, 1 already in" in err
    assert len(assert_consistent(run)) == SMALL_JOBS
