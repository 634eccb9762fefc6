"""Sweep bookkeeping with a fake runner: resume, failures, parallel workers, the summary.

The fake's metric is a known function of size and fold (scikit-learn tests learning_curve
the same way), so no network is trained here, except in one test that checks that worker
processes started by spawn train exactly what one process trains.
"""
import dataclasses
import math
import os
import pickle
import signal
import time

import numpy as np
import pytest

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.presets import PRESETS, SweepConfig, get_preset
from leukolearn.experiments.protocol import ProtocolOptions, make_plan
from leukolearn.runstore.store import DatasetInfo, RunStore
from leukolearn.analysis.summary import summarize, summarize_store
from leukolearn.experiments import workers
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.experiments.sweep import run_sweep, sweep_dataset


def tiny_cells(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return CellImages(rng.integers(0, 255, (n, 4, 4, 3), dtype=np.uint8), np.arange(n) % 2,
                      ("other", "blast"), tuple(f"img{i}" for i in range(n)))


def fake_metric(size, fold):
    return 0.5 + size / 100 + fold / 1000


class FakeRunner:
    def __init__(self, interrupt_after=None, fail=(), restarts=None):
        self.calls = []
        self.interrupt_after = interrupt_after
        self.fail = set(fail)
        self.restarts = dict(restarts or {})  # job_id -> dead networks re-initialised

    def __call__(self, cells, job):
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(job.job_id)
        if job.job_id in self.fail:
            raise RuntimeError(f"cannot fit {job.job_id}")
        rng = np.random.default_rng(job.seed)  # depends on the job only, like real training
        probs = rng.dirichlet([1, 1], size=len(job.test_idx))
        return JobOutcome(metric=fake_metric(job.size, job.fold), best_epoch=job.size % 7,
                          epochs_run=9, seconds=0.0, degenerate=job.job_id.startswith("f01-n4"),
                          test_probs=probs, history=[{"epoch": 1, "val_loss": 0.1}],
                          restarts=self.restarts.get(job.job_id, 0))


OPTIONS = ProtocolOptions(folds=4, sizes=(4, 8, 12))
CONFIG = SweepConfig("all", OPTIONS, get_preset("quick").train, "auc")


@pytest.fixture
def cells():
    return tiny_cells()


@pytest.fixture
def plan(cells):
    return make_plan("all", cells.labels, OPTIONS)


def open_store(path, cells, config=CONFIG):
    return RunStore.create_or_resume(path, config=config, dataset=DatasetInfo.from_cells(cells),
                                     cells=cells)


def sweep(path, cells, plan, runner, **kw):
    with open_store(path, cells) as store:
        return run_sweep(cells, plan, store, runner=runner, progress=False, **kw)


def snapshot(path):
    """Everything a figure could use, minus wall-clock times."""
    with RunStore.open(path) as store:
        rows = [dataclasses.replace(r, finished_at="", seconds=0.0) for r in store.results()]
        preds = {r.job_id: store.predictions(r.job_id).probs.tolist() for r in rows}
    return rows, preds


def test_interrupted_sweep_resumes_exactly_the_missing_jobs(tmp_path, cells, plan):
    full = sweep(tmp_path / "full", cells, plan, FakeRunner())
    assert full.done == len(plan) == 12 and full.complete

    first = FakeRunner(interrupt_after=5)
    report = sweep(tmp_path / "cut", cells, plan, first)
    assert report.interrupted and report.done == 5 and not report.complete
    second = FakeRunner()
    report = sweep(tmp_path / "cut", cells, plan, second)
    assert report.skipped == 5 and report.done == 7 and report.complete
    assert sorted(first.calls + second.calls) == sorted(j.job_id for j in plan)  # none twice
    assert snapshot(tmp_path / "cut") == snapshot(tmp_path / "full")
    third = FakeRunner()
    assert sweep(tmp_path / "cut", cells, plan, third).skipped == 12 and third.calls == []


def test_max_jobs_stops_early_and_the_rest_follows(tmp_path, cells, plan):
    runner = FakeRunner()
    assert sweep(tmp_path, cells, plan, runner, max_jobs=3).done == 3
    assert sweep(tmp_path, cells, plan, runner).done == 9
    assert len(runner.calls) == 12


def test_a_failing_job_is_recorded_and_retried(tmp_path, cells, plan):
    bad = plan[4].job_id
    report = sweep(tmp_path, cells, plan, FakeRunner(fail={bad}))
    assert (report.done, report.failed) == (11, 1)
    assert report.failures == [(bad, f"RuntimeError: cannot fit {bad}")]
    retry = FakeRunner()
    assert sweep(tmp_path, cells, plan, retry).done == 1 and retry.calls == [bad]


# spawn starts a fresh interpreter per worker (1-2 s): behind the slow marker, run in CI.
START_METHODS = (["fork", pytest.param("spawn", marks=pytest.mark.slow)] if os.name == "posix"
                 else ["spawn"])


@pytest.mark.parametrize("start_method", START_METHODS)
def test_two_workers_give_the_same_results_as_one(tmp_path, cells, plan, start_method):
    sweep(tmp_path / "one", cells, plan, FakeRunner(), jobs=1)
    report = sweep(tmp_path / "two", cells, plan, FakeRunner(fail={plan[2].job_id}), jobs=2,
                   start_method=start_method)
    assert (report.done, report.failed) == (11, 1)  # a worker's error comes back as a message
    sweep(tmp_path / "two", cells, plan, FakeRunner(), jobs=2, start_method=start_method)
    assert snapshot(tmp_path / "two") == snapshot(tmp_path / "one")


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.slow
def test_interrupt_in_a_worker_stops_the_sweep(tmp_path, cells, plan, start_method):
    report = sweep(tmp_path, cells, plan, FakeRunner(interrupt_after=0), jobs=2,
                   start_method=start_method)
    assert report.interrupted and report.done == 0
    assert sweep(tmp_path, cells, plan, FakeRunner(), jobs=2).done == 12


class StuckRunner(FakeRunner):
    """Job 0 runs for minutes; job 1 waits until job 0 is running, then raises Ctrl-C's
    KeyboardInterrupt. Defined here, not in a test, so spawned workers can unpickle it."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def __call__(self, cells, job):
        if job.job_id == self.stuck:
            (self.folder / "stuck.pid").write_text(str(os.getpid()))
            time.sleep(120)
            (self.folder / "stuck.finished").write_text("")
        elif job.job_id == self.interrupts:
            deadline = time.monotonic() + 120
            while not (self.folder / "stuck.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise KeyboardInterrupt
        return super().__call__(cells, job)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_ctrl_c_stops_a_running_job_instead_of_waiting_for_it(tmp_path, cells, plan,
                                                              start_method):
    runner = StuckRunner(tmp_path)
    runner.stuck, runner.interrupts = plan[0].job_id, plan[1].job_id
    report = sweep(tmp_path / "run", cells, plan, runner, jobs=2, start_method=start_method)
    assert report.interrupted and report.done == 0
    pid = int((tmp_path / "stuck.pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed (and reaped) by the time we return
        os.kill(pid, 0)
    assert not (tmp_path / "stuck.finished").exists()


class DyingRunner(FakeRunner):
    """The worker running job `dies` is killed, as the kernel's OOM killer would."""

    def __call__(self, cells, job):
        if job.job_id == self.dies:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(cells, job)


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.slow
def test_a_worker_that_dies_fails_its_job_and_a_resume_finishes(tmp_path, cells, plan,
                                                                start_method):
    runner = DyingRunner()
    runner.dies = plan[3].job_id
    report = sweep(tmp_path / "run", cells, plan, runner, jobs=2, start_method=start_method)
    assert not report.interrupted and report.done + report.failed == len(plan)
    failures = dict(report.failures)
    assert failures[plan[3].job_id] == workers.WORKER_DIED
    # The pool is broken from then on: the jobs still queued fail alike and run on resume.
    assert set(failures.values()) == {workers.WORKER_DIED}
    assert sweep(tmp_path / "run", cells, plan, FakeRunner(), jobs=2).complete
    sweep(tmp_path / "one", cells, plan, FakeRunner())
    assert snapshot(tmp_path / "run") == snapshot(tmp_path / "one")


def test_a_memory_mapped_dataset_travels_as_its_file(tmp_path):
    rng = np.random.default_rng(1)
    big = CellImages(rng.integers(0, 255, (400, 32, 32, 3), dtype=np.uint8), np.arange(400) % 2,
                     ("other", "blast"), tuple(f"img{i}" for i in range(400)))
    np.save(tmp_path / "images.npy", big.images)
    mapped = dataclasses.replace(big, images=np.load(tmp_path / "images.npy", mmap_mode="r"))
    data = pickle.dumps(workers.SharedCells(mapped))
    assert len(data) < 20_000  # the ids and labels, not the 1.2 MB of pixels
    cells = pickle.loads(data).cells
    assert isinstance(cells.images, np.memmap) and not cells.images.flags.writeable
    assert os.path.samefile(cells.images.filename, tmp_path / "images.npy")
    assert np.array_equal(cells.images, big.images)
    assert cells.fingerprint == mapped.fingerprint and cells.labels.tolist() == big.labels.tolist()
    # A copy or a part of a map is pickled as it is, pixels and all.
    part = dataclasses.replace(mapped, images=mapped.images[:200], labels=mapped.labels[:200],
                               image_ids=mapped.image_ids[:200], fingerprint="")
    data = pickle.dumps(workers.SharedCells(part))
    assert len(data) > part.images.nbytes
    assert np.array_equal(pickle.loads(data).cells.images, big.images[:200])


@pytest.mark.slow
def test_spawned_workers_train_exactly_what_one_process_trains(tmp_path):
    # Whatever threads this process and the workers have (cores // 2 each): a training
    # fixes its own (training.threads.TRAINING_THREADS).
    from safetensors.numpy import load_file

    from leukolearn.data.synthetic import make_binary
    from leukolearn.model import kernels
    from leukolearn.training.config import TrainConfig

    cells = make_binary(6, size=190, seed=4)
    np.save(tmp_path / "images.npy", cells.images)  # mapped, as the decode cache hands it out
    cells = dataclasses.replace(cells, images=np.load(tmp_path / "images.npy", mmap_mode="r"))
    config = SweepConfig("all", ProtocolOptions(folds=3, sizes=(4,), run_folds=2),
                         TrainConfig.binary(max_epochs=2, patience=2), "auc")
    one = sweep_dataset(cells, config, tmp_path / "one", progress=False)
    two = sweep_dataset(cells, config, tmp_path / "two", jobs=2, start_method="spawn",
                        progress=False)
    assert one.done == two.done == 2 and two.failures == []
    assert snapshot(tmp_path / "two") == snapshot(tmp_path / "one")  # metrics, probabilities
    with RunStore.open(tmp_path / "one") as a, RunStore.open(tmp_path / "two") as b:
        for record in a.results():
            wa, wb = (load_file(s.weights_path(record.job_id)) for s in (a, b))
            assert wa.keys() == wb.keys()
            assert all(np.array_equal(wa[k], wb[k]) for k in wa), record.job_id
        ran = {(r.kernels, r.threads, r.device) for r in a.results() + b.results()}
    assert ran == {(kernels.enabled(), 1, "cpu")}


def test_an_unknown_start_method_is_refused(tmp_path, cells, plan, monkeypatch):
    monkeypatch.setenv(workers.START_METHOD_ENV, "teleport")
    with pytest.raises(LeukolearnError, match="unknown start method 'teleport'"):
        sweep(tmp_path, cells, plan, FakeRunner(), jobs=2)


def test_changed_config_and_dataset_are_refused(tmp_path, cells, plan):
    sweep(tmp_path, cells, plan, FakeRunner(), max_jobs=1)
    with pytest.raises(LeukolearnError, match="train.max_epochs"):
        open_store(tmp_path, cells, CONFIG.with_train(max_epochs=31))
    with pytest.raises(LeukolearnError, match="another dataset"):
        open_store(tmp_path, tiny_cells(seed=3))


def test_a_run_of_some_folds_extends_to_all(tmp_path, cells):
    some = dataclasses.replace(CONFIG, options=dataclasses.replace(OPTIONS, run_folds=2))
    with open_store(tmp_path, cells, some) as store:
        first = run_sweep(cells, make_plan("all", cells.labels, some.options), store,
                          runner=FakeRunner(), progress=False)
    assert first.done == 6
    runner = FakeRunner()
    with open_store(tmp_path, cells, CONFIG) as store:  # run_folds=None: every fold
        report = run_sweep(cells, make_plan("all", cells.labels, OPTIONS), store, runner=runner,
                           progress=False)
        assert store.config_dict["options"]["run_folds"] is None  # the config says what was asked last
    assert report.skipped == 6 and sorted(runner.calls) == sorted(
        j.job_id for j in make_plan("all", cells.labels, OPTIONS) if j.fold >= 2)


def test_summary_of_a_fake_run(tmp_path, cells, plan):
    sweep(tmp_path, cells, plan, FakeRunner(fail={"f02-n12-s0"}))
    with RunStore.open(tmp_path) as store:
        summary = summarize_store(store)
    assert [r.size for r in summary.rows] == [4, 8, 12]
    for row in summary.rows:
        folds = [0, 1, 2, 3] if row.size != 12 else [0, 1, 3]
        values = [fake_metric(row.size, f) for f in folds]
        assert row.n_jobs == row.n_folds == len(folds)
        assert row.mean == pytest.approx(np.mean(values))
        assert row.sd == pytest.approx(np.std(values, ddof=1))
        assert row.median == pytest.approx(np.median(values))
        assert row.n_failed == (1 if row.size == 12 else 0)
    assert summary.row(4).n_degenerate == 1 and summary.row(8).n_degenerate == 0
    lines = summary.to_csv().splitlines()
    assert lines[0].startswith("metric,size,n_jobs,n_folds,mean,sd")
    assert lines[1].startswith(f"auc,4,4,4,{np.mean([fake_metric(4, f) for f in range(4)]):.4f}")
    assert summary.to_dict()["rows"][0]["size"] == 4


@pytest.mark.slow
def test_restarts_are_stored_and_summarised(tmp_path, cells, plan, capsys, monkeypatch):
    from leukolearn.cli.sweep_cmds import _print_table

    restarts = {"f00-n8-s0": 2, "f03-n8-s0": 1, "f01-n12-s0": 3}
    sweep(tmp_path / "run", cells, plan, FakeRunner(restarts=restarts, fail={"f02-n8-s0"}),
          jobs=2)  # through worker processes: the outcome is pickled on the way back
    with RunStore.open(tmp_path / "run") as store:
        records = store.results(include_failed=True)
        summary = summarize_store(store)
    assert {r.job_id: r.restarts for r in records if r.restarts} == restarts
    assert {r.job_id: r.restarts for r in records if r.status == "failed"} == {"f02-n8-s0": None}
    assert [r.n_restarted for r in summary.rows] == [0, 2, 1]  # jobs, not restarts
    assert summary.to_dict()["rows"][1]["n_restarted"] == 2
    lines = summary.to_csv().splitlines()
    assert lines[0].endswith(",n_failed,n_restarted") and lines[2].endswith(",1,2")

    monkeypatch.setenv("COLUMNS", "120")  # rich's width when not on a terminal
    _print_table(summary, tmp_path / "run")
    assert "restarted" in capsys.readouterr().out
    _print_table(summarize([dataclasses.replace(r, restarts=0) for r in records]), tmp_path)
    assert "restarted" not in capsys.readouterr().out  # no restarts: the table stays narrow


@pytest.mark.parametrize("batched", [False, True])
def test_training_runner_passes_restarts_on(cells, plan, monkeypatch, batched):
    """Both the one-job path (train_model) and the batched one (train_many) count restarts."""
    import leukolearn.training.batched
    import leukolearn.training.loop
    from leukolearn.experiments.sweep import TrainingRunner
    from leukolearn.training.config import TrainConfig
    from leukolearn.training.loop import TrainResult

    def result(job_seed):
        return TrainResult(model=None, best_epoch=1, epochs_run=2, restarts=job_seed % 3)

    monkeypatch.setattr(leukolearn.training.loop, "train_model",
                        lambda cells, train, val, config, *, seed: result(seed))
    monkeypatch.setattr(leukolearn.training.batched, "train_many",
                        lambda cells, jobs, config: [result(seed) for _, _, seed in jobs])
    monkeypatch.setattr(leukolearn.training.loop, "predict_proba",  # no network to run
                        lambda model, images: np.full((len(images), 2), 0.5, dtype=np.float32))
    runner = TrainingRunner(TrainConfig(restarts=3))
    jobs = plan[:3]
    outcomes = runner.run_many(cells, jobs) if batched else [runner(cells, j) for j in jobs]
    assert [o.restarts for o in outcomes] == [j.seed % 3 for j in jobs]


def test_multiclass_summary_has_confusion_counts(tmp_path):
    cells = tiny_cells(n=60)
    cells = dataclasses.replace(cells, labels=np.arange(60) % 3, class_names=("a", "b", "c"),
                                fingerprint="")
    config = get_preset("paper-multiclass").with_options(folds=3, sizes=(6,), cap_sizes=False)

    def runner(cells, job):
        probs = np.eye(3)[cells.labels[list(job.test_idx)]]  # a perfect classifier
        return JobOutcome(1.0, 1, 1, 0.0, False, probs, [], metric_name="weighted_f1")

    report = sweep_dataset(cells, config, tmp_path, runner=runner, progress=False)
    assert report.done == 3
    with RunStore.open(tmp_path) as store:
        summary = summarize_store(store)
    assert summary.metric_name == "weighted_f1" and summary.row(6).mean == 1.0
    assert summary.confusion[6] == [[20, 0, 0], [0, 20, 0], [0, 0, 20]]  # every image tested once


def test_auc_needs_two_classes(tmp_path):
    cells = dataclasses.replace(tiny_cells(n=30), labels=np.arange(30) % 3,
                                class_names=("a", "b", "c"), fingerprint="")
    with pytest.raises(LeukolearnError, match="--positive"):
        sweep_dataset(cells, CONFIG, tmp_path, runner=FakeRunner(), progress=False)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name):
    config = get_preset(name)
    assert SweepConfig.from_json(config.to_json()) == config


def test_quick_preset_is_quick():
    quick = get_preset("quick")
    assert quick.options.run_folds == 2 and quick.options.sizes == (10, 50, 100)
    assert (quick.train.max_epochs, quick.train.patience) == (30, 10)
    assert get_preset("paper-aml-binary").options.test_size == 600
    assert math.isclose(get_preset("paper-multiclass").train.lr, 1e-4)


def _tiny_real_sweep(tmp_path, name, **kwargs):
    """Two real 1-epoch trainings (the TrainingRunner), and how the store says they ran."""
    from leukolearn.data.synthetic import make_binary
    from leukolearn.training.config import TrainConfig

    cells = make_binary(6, size=190, seed=4)
    config = SweepConfig("all", ProtocolOptions(folds=3, sizes=(4,), run_folds=2),
                         TrainConfig.binary(max_epochs=1, patience=1, device="cpu"), "auc")
    report = sweep_dataset(cells, config, tmp_path / name, progress=False, **kwargs)
    assert report.done == 2 and report.failures == []
    with RunStore.open(tmp_path / name) as store:
        return {(r.kernels, r.threads, r.device) for r in store.results()}


def test_a_batched_sweep_records_that_no_fused_kernels_ran(tmp_path):
    # train_many runs PyTorch's layers through vmap: kernels 0 even on the CPU with the
    # kernels built, which the runner's old guess (device == cpu and enabled()) got wrong.
    assert _tiny_real_sweep(tmp_path, "batched", batch_models=2) == {(False, 1, "cpu")}


@pytest.mark.slow
def test_a_cpu_sweep_records_the_fused_kernels_it_ran(tmp_path):
    from leukolearn.model import kernels

    if not kernels.enabled():
        pytest.skip(f"kernels off: {kernels.problem()}")
    assert _tiny_real_sweep(tmp_path, "single") == {(True, 1, "cpu")}
    with kernels.disabled():  # switched off: the loop ran PyTorch's layers, and says so
        assert _tiny_real_sweep(tmp_path, "off") == {(False, 1, "cpu")}
