"""`sweep --executor ray` on a real local Ray (2 CPUs, no mock): killed and resumed, it
gives every job exactly the local executor's result; groups of K jobs per task with
--batch-models K; and the options are checked before any work.

Slow: each sweep starts its own Ray (a few seconds). Under CI Ray must be installed (it is
in the test extra), so a missing Ray fails there instead of skipping.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from leukolearn.errors import LeukolearnError
from helpers import run_cli
from sweep_processes import (one_thread_env, write_cells, assert_consistent, assert_same_results, done_rows, snapshot,
                             start, wait_for)

if os.environ.get("CI") != "true":
    pytest.importorskip("ray")

# 18 jobs of at most 12 epochs (about a second each), one thread everywhere.
ARGS = ["--preset", "quick", "--folds", "3", "--size", "190", "--positive", "blast",
        "--keep-duplicates", "--no-progress", "--seed", "7", "--run-folds", "3",
        "--sizes", "2,4,6", "--replicates", "2", "--max-epochs", "12", "--patience", "12"]
N_JOBS = 18


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cells(tmp_path_factory.mktemp("cells"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return one_thread_env(tmp_path_factory.mktemp("cache"))


def sweep(env, data, out, args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leukolearn", "sweep", "folder", str(data),
                           "--out", str(out), *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_ray_sweep_killed_and_resumed_equals_the_local_executor(data, env, tmp_path):
    local = sweep(env, data, tmp_path / "local", [*ARGS, "--jobs", "1"])
    assert local.returncode == 0, local.stderr

    run = tmp_path / "ray"
    ray_args = [*ARGS, "--jobs", "2", "--executor", "ray"]
    proc = start(env, data, run, ray_args)
    # Killed with some jobs saved and some left; the count is read with the driver stopped,
    # so no job can be saved between the check and the kill.
    end = time.monotonic() + 300
    while True:
        wait_for(lambda: done_rows(run) >= 1, proc)
        proc.send_signal(signal.SIGSTOP)
        saved = done_rows(run)
        if saved < N_JOBS or time.monotonic() > end:
            break
        proc.send_signal(signal.SIGCONT)
    assert 1 <= saved < N_JOBS, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert assert_consistent(run) and done_rows(run) == saved  # nothing half-written

    resumed = sweep(env, data, run, ray_args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{N_JOBS - saved} jobs done, {saved} already in" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert len(assert_consistent(run)) == N_JOBS
    assert_same_results(snapshot(tmp_path / "local"), snapshot(run))


@pytest.mark.slow
def test_batch_models_trains_groups_in_ray_tasks_like_one_process(data, env, tmp_path):
    """--batch-models K: each Ray task trains K networks together (train_many); the
    results equal those of the same groups trained in this process."""
    args = [*ARGS, "--sizes", "2,4", "--replicates", "1", "--batch-models", "3"]  # 6 jobs
    here = sweep(env, data, tmp_path / "here", args)
    on_ray = sweep(env, data, tmp_path / "ray", [*args, "--executor", "ray", "--jobs", "2"])
    assert here.returncode == 0 and on_ray.returncode == 0, here.stderr + on_ray.stderr
    assert_same_results(snapshot(tmp_path / "here"), snapshot(tmp_path / "ray"))


def test_options_are_checked_before_any_work(data, tmp_path, monkeypatch):
    from leukolearn.experiments.sweep import check_workers

    with pytest.raises(LeukolearnError, match="--ray-address needs --executor ray"):
        check_workers(1, 1, "local", "ray://head:10001")
    with pytest.raises(LeukolearnError, match="unknown executor 'dask'"):
        check_workers(1, 1, "dask")
    check_workers(2, 4, "ray")  # Ray runs groups of K jobs on several workers
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(LeukolearnError, match=r'pip install "leukolearn\[ray\]"'):
        check_workers(1, 1, "ray")


def test_cli_without_ray_says_how_to_install_and_writes_nothing(data, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "run"
    code, _, err = run_cli(["sweep", "folder", data, "--out", out, *ARGS, "--executor", "ray"],
                           capsys)
    assert code == 2 and "leukolearn[ray]" in err and "Traceback" not in err
    assert not out.exists()
