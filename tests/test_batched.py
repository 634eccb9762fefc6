"""train_many: K networks in lockstep equal K separate trainings (CPU, PyTorch layers)."""
import time

import numpy as np
import pytest
import torch

from leukolearn.model import kernels
from leukolearn.training.batched import train_many
from leukolearn.data.synthetic import make_binary
from leukolearn.training.loop import TrainConfig, train_model

SIZE = 190


@pytest.fixture(scope="module")
def cells():
    return make_binary(12, size=SIZE, seed=3)  # 24 images


def _jobs(cells):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(cells.labels))
    # different training-set sizes (not multiples of the batch size) and validation sizes
    return [(order[:12], order[18:24], 7), (order[2:9], order[12:16], 8),
            (order[5:16], order[16:21], 9)]


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_batched_training_equals_separate_trainings(cells, optimizer):
    config = TrainConfig(optimizer=optimizer, lr=1e-3, max_epochs=2, patience=5,
                         augment=optimizer == "adam")  # augmentation draws checked too
    jobs = _jobs(cells)
    with kernels.disabled():
        t0 = time.perf_counter()
        batched = train_many(cells, jobs, config, "cpu")
        t1 = time.perf_counter()
        separate = [train_model(cells, t, v, config, seed=s) for t, v, s in jobs]
        t2 = time.perf_counter()
    print(f"batched {t1 - t0:.2f}s, separate {t2 - t1:.2f}s")
    for got, want in zip(batched, separate):
        assert got.epochs_run == want.epochs_run == 2
        assert got.best_epoch == want.best_epoch
        for g, w in zip(got.history, want.history):
            assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-4, abs=1e-6)
            assert g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-4, abs=1e-6)
        for (name, g), w in zip(got.model.state_dict().items(), want.model.state_dict().values()):
            # measured: losses within 4e-8, weights within 6e-6 (RMSprop divides tiny
            # gradients by their running RMS, which magnifies the summation-order rounding)
            torch.testing.assert_close(g, w, rtol=1e-4, atol=5e-5, msg=name)


def test_each_network_early_stops_on_its_own(cells, monkeypatch):
    import leukolearn.training.batched as batched_module

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
