"""train_many: K networks in lockstep equal K separate trainings (CPU, PyTorch layers).

The equivalence test runs both paths on the same jobs in the settings where they could
part: RMSprop and Adam, augmentation, oversampled multiclass training sets, networks that
early-stop while others train on (dropped from the stack), and dead networks restarted
from derived seeds. Small images (190 px, the smallest the CNN takes) and a few epochs keep
each case to a few seconds.
"""
import time
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch

import leukolearn.training.batched as batched_module
import leukolearn.training.loop as loop_module
from leukolearn.data.synthetic import make_binary, make_cells
from leukolearn.model import kernels
from leukolearn.training.batched import train_many
from leukolearn.training.config import TrainConfig
from leukolearn.training.loop import train_model

SIZE = 190


@pytest.fixture(scope="module")
def cells():
    return make_binary(12, size=SIZE, seed=3)  # 24 images


@pytest.fixture(scope="module")
def multiclass_cells():
    return make_cells(8, classes=("blast", "lymphocyte", "neutrophil"), size=SIZE, seed=2)


def _jobs(cells, seeds=(7, 8, 9)):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(cells.labels))
    # different training-set sizes (not multiples of the batch size) and validation sizes
    sets = [(order[:12], order[18:24]), (order[2:9], order[12:16]), (order[5:16], order[16:21])]
    return [(t, v, s) for (t, v), s in zip(sets, seeds)]


def _multiclass_jobs(cells):
    # Unbalanced training sets (6/3/2 and 2/5/4 images a class), so that oversampling to
    # 6 a class adds different images to each; validation is the rest.
    by_class = [np.flatnonzero(cells.labels == k) for k in range(3)]
    jobs = []
    for seed, counts in ((0, (6, 3, 2)), (1, (2, 5, 4))):
        train = np.concatenate([idx[:n] for idx, n in zip(by_class, counts)])
        jobs.append((train, np.setdiff1d(np.arange(len(cells.labels)), train), seed))
    return jobs


def _attempt_seeds(seed, restarts):
    """The documented restart seeds, written out here independently of the code."""
    return [seed] + [int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
                     for k in range(1, restarts + 1)]


class Case(NamedTuple):
    cells: str  # the fixture
    jobs: Callable
    config: TrainConfig
    # What the case must exercise (measured once): a case whose networks stopped dying
    # or early-stopping would no longer test what it is named for.
    epochs_run: list
    restarts: list
    degenerate: list
    dead: Callable = lambda jobs: set()  # seeds whose networks are built dead


def _doomed(jobs):
    # Job 0 dead on all 3 attempts (kept dead, restarts 2), job 1 on its first, job 2 never.
    (_, _, s0), (_, _, s1), _ = jobs
    return set(_attempt_seeds(s0, 2)) | {s1}


CASES = {
    "rmsprop": Case("cells", _jobs, TrainConfig(max_epochs=2, patience=5, augment=False),
                    [2, 2, 2], [0, 0, 0], [False] * 3),
    "adam-augment": Case("cells", _jobs,
                         TrainConfig(optimizer="adam", lr=1e-3, max_epochs=2, patience=5),
                         [2, 2, 2], [0, 0, 0], [False] * 3),
    # Beyond the paper: zoom and colour changes drawn with the flips and angles
    "adam-scale-colour": Case("cells", _jobs,
                              TrainConfig(optimizer="adam", lr=1e-3, max_epochs=2, patience=5,
                                          scale_jitter=0.25, colour_jitter=0.15),
                              [2, 2, 2], [0, 0, 0], [False] * 3),
    # TrainConfig.multiclass: Adam lr 1e-4, augmentation, oversampling
    "multiclass-oversample": Case("multiclass_cells", _multiclass_jobs,
                                  TrainConfig.multiclass(max_epochs=3, patience=1,
                                                         oversample_to=6),
                                  [3, 3], [0, 0], [False] * 2),
    # The paper's binary settings (augmentation off, see below); jobs 0 and 2 early-stop
    # at epoch 2 while job 1 trains on (they leave the stack mid-run); dead networks are
    # restarted. They die here by force (`_kill`): high learning rates kill networks
    # naturally but also blow the two paths' rounding up past any useful tolerance
    # (measured: weights 0.08 apart at lr 1e-2). Even at lr 1e-3 the paths part with the
    # steps: RMSprop's early steps are about lr * sign(gradient), and the rounding flips
    # the sign of gradients near 0. Measured after 3 epochs: up to 1e-3 with augmentation,
    # up to 8e-3 without for seeds (1, 2, 3); these seeds stay within 1e-7.
    "restarts": Case("cells", lambda cells: _jobs(cells, seeds=(10, 11, 12)),
                     TrainConfig.binary(max_epochs=3, patience=1, restarts=2, augment=False),
                     [2, 3, 2], [2, 1, 0], [True, False, False], dead=_doomed),
}


def _kill(model):
    """A dead ReLU network: the hidden layer outputs 0 for every image, so the output is
    the classifier's bias (constant) and no gradient reaches anything but that bias."""
    with torch.no_grad():
        model.hidden.weight.zero_()
        model.hidden.bias.zero_()
    return model


@pytest.mark.parametrize("case", CASES)
@pytest.mark.slow
def test_batched_training_equals_separate_trainings(request, monkeypatch, case):
    case = CASES[case]
    cells = request.getfixturevalue(case.cells)
    jobs = case.jobs(cells)
    dead = case.dead(jobs)
    seeds = {"batched": [], "separate": []}

    def spy(path, module):  # records the seed of every network a path builds
        real = module.build_model

        def build(*args, seed, **kwargs):
            seeds[path].append(seed)
            model = real(*args, seed=seed, **kwargs)
            return _kill(model) if seed in dead else model

        monkeypatch.setattr(module, "build_model", build)

    spy("batched", batched_module)
    spy("separate", loop_module)
    with kernels.disabled():
        t0 = time.perf_counter()
        batched = train_many(cells, jobs, case.config, "cpu")
        t1 = time.perf_counter()
        separate = [train_model(cells, t, v, case.config, seed=s) for t, v, s in jobs]
        t2 = time.perf_counter()
    print(f"batched {t1 - t0:.2f}s, separate {t2 - t1:.2f}s")

    assert [r.epochs_run for r in separate] == case.epochs_run
    assert [r.restarts for r in separate] == case.restarts
    assert [r.degenerate for r in separate] == case.degenerate
    # The same seeds: train_model tries one job after the other; train_many tries all
    # jobs, then again the ones still dead, together.
    per_job = [_attempt_seeds(s, n) for (_, _, s), n in zip(jobs, case.restarts)]
    assert seeds["separate"] == [s for job in per_job for s in job]
    assert seeds["batched"] == [job[a] for a in range(max(case.restarts) + 1)
                                for job in per_job if len(job) > a]
    for got, want in zip(batched, separate):
        assert (got.epochs_run, got.best_epoch, got.restarts, got.degenerate) == (
            want.epochs_run, want.best_epoch, want.restarts, want.degenerate)
        assert [g["epoch"] for g in got.history] == [w["epoch"] for w in want.history]
        for g, w in zip(got.history, want.history):
            assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-4, abs=1e-6)
            assert g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-4, abs=1e-6)
        assert not got.model.training and next(got.model.parameters()).device.type == "cpu"
        for (name, g), w in zip(got.model.state_dict().items(), want.model.state_dict().values()):
            # measured: losses within 4e-8, weights within 6e-6 on one Xeon and 6.7e-5 on
            # another (AVX-512 FP16 / AMX: MKL and oneDNN pick other kernels, so another
            # summation order). RMSprop divides tiny gradients by their running RMS, which
            # magnifies that rounding; the README says it can reach about 1e-3.
            torch.testing.assert_close(g, w, rtol=1e-3, atol=2e-4, msg=name)


@pytest.mark.parametrize("max_epochs, patience", [(3, 2), (2, 5)])
@pytest.mark.slow
def test_without_a_best_epoch_both_paths_keep_the_last_weights(cells, max_epochs, patience):
    # lr 1e38 makes the losses NaN from the first epoch on: no epoch is ever best, so both
    # keep the weights the network ended with -- whether it early-stops and leaves the
    # stack (patience 2) or trains to max_epochs (patience 5) -- not its initial ones.
    config = TrainConfig.binary(lr=1e38, max_epochs=max_epochs, patience=patience,
                                augment=False)
    jobs = _jobs(cells)[:2]
    with kernels.disabled():
        batched = train_many(cells, jobs, config, "cpu")
        separate = [train_model(cells, t, v, config, seed=s) for t, v, s in jobs]
    for got, want in zip(batched, separate):
        assert got.best_epoch == want.best_epoch == 0
        assert got.epochs_run == want.epochs_run == min(max_epochs, patience)
        # Glorot weights are finite and below 1; 1e38-sized steps leave them NaN or huge.
        # (Which elements end NaN differs between the paths: that is rounding too.)
        for model in (got.model, want.model):
            assert not all(torch.isfinite(p).all() and p.abs().max() < 1
                           for p in model.parameters())


@pytest.mark.slow
def test_each_network_early_stops_on_its_own(cells, monkeypatch):
    # Job 1's validation loss only rises after epoch 1: with patience 1 it stops at epoch 2.
    real = batched_module._val_losses
    calls = {"n": 0}

    def fake(forward, params, group, images, device):
        losses = real(forward, params, group, images, device)
        calls["n"] += 1
        for row, m in enumerate(group):
            if len(m.train_pos) == 7:  # job 1
                losses[row] = float(calls["n"])  # 1, 2, ...: never better than epoch 1
            else:
                losses[row] = 10.0 - calls["n"]  # always improving
        return losses

    monkeypatch.setattr(batched_module, "_val_losses", fake)
    config = TrainConfig(max_epochs=3, patience=1, augment=False)
    results = train_many(cells, _jobs(cells), config, "cpu")
    assert [r.epochs_run for r in results] == [3, 2, 3]
    assert [r.best_epoch for r in results] == [3, 1, 3]
    assert [len(r.history) for r in results] == [3, 2, 3]


def test_auto_device_without_gpu_runs_on_cpu(cells, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = TrainConfig(max_epochs=1, augment=False, device="auto")
    (result,) = train_many(cells, _jobs(cells)[:1], config)
    assert next(result.model.parameters()).device.type == "cpu"
    assert result.epochs_run == 1


@pytest.mark.slow
def test_sweep_batches_jobs_through_run_many(tmp_path, cells):
    """run_sweep(batch_models=K) hands K jobs at a time to TrainingRunner.run_many and
    stores the same results as the one-job-at-a-time path (up to float rounding)."""

    from leukolearn.experiments.presets import SweepConfig
    from leukolearn.experiments.protocol import ProtocolOptions, make_plan
    from leukolearn.runstore.store import DatasetInfo, RunStore
    from leukolearn.experiments.sweep import TrainingRunner, run_sweep

    options = ProtocolOptions(folds=4, sizes=(4, 8))
    train = TrainConfig(max_epochs=1, patience=1, augment=False)
    config = SweepConfig("all", options, train, "auc")
    plan = make_plan("all", cells.labels, options)[:3]
    calls = []

    class Spy(TrainingRunner):
        def run_many(self, cells, jobs):
            calls.append(len(jobs))
            return super().run_many(cells, jobs)

    metrics = {}
    for k in (1, 2):
        path = tmp_path / f"k{k}"
        with RunStore.create_or_resume(path, config=config, dataset=DatasetInfo.from_cells(cells),
                                       cells=cells) as store, kernels.disabled():
            report = run_sweep(cells, plan, store, runner=Spy(train), progress=False,
                               batch_models=k)
            assert report.done == 3 and report.failed == 0
            metrics[k] = {r.job_id: (r.metric, r.epochs_run) for r in store.results()}
    assert calls == [2, 1]
    assert metrics[1].keys() == metrics[2].keys()
    for job_id, (metric, epochs) in metrics[1].items():
        assert metrics[2][job_id][1] == epochs
        assert metrics[2][job_id][0] == pytest.approx(metric, abs=1e-6, nan_ok=True)
