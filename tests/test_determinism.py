"""Same seed, same result: a job's numbers depend on the config and the data, not on
--jobs, on the caller's torch thread count or on the machine's cores (every CPU training
runs with `training.threads.TRAINING_THREADS`); what still changes them (the device, the
fused kernels) is recorded per job, and a resume that runs otherwise warns.

The thread counts are set on purpose (the parent 2, each of 2 workers 1), so the checks
mean the same on any machine: before the count was fixed, these same runs differed in
every job's weights.
"""
import dataclasses
import sqlite3
import warnings

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from leukolearn.data.cellimages import CellImages
from leukolearn.data.synthetic import make_binary
from leukolearn.experiments import workers
from leukolearn.experiments.presets import SweepConfig
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.experiments.sweep import TrainingRunner, sweep_dataset
from leukolearn.model import kernels
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.runstore.store import RunStore
from leukolearn.training.config import TrainConfig
from leukolearn.training.loop import predict_proba, train_model
from leukolearn.training.threads import TRAINING_THREADS

SIZE = 190  # the smallest input the paper's six blocks accept


@pytest.fixture
def threads():
    """set(n): torch's thread count in this process for the test; restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def weights_of(model) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.parameters()]


# ---- one training, one prediction ------------------------------------------------------

def test_train_model_gives_the_same_result_with_the_callers_1_or_2_threads(threads):
    cells = make_binary(8, size=SIZE, seed=9)
    config = TrainConfig.binary(max_epochs=3, patience=5)  # augmentation on: the fused path
    results = []
    for n in (1, 2):
        threads(n)
        results.append(train_model(cells, np.arange(10), np.arange(10, 16), config, seed=3))
        assert torch.get_num_threads() == n  # the caller's setting is back
    a, b = results
    assert [(h["train_loss"], h["val_loss"]) for h in a.history] == \
        [(h["train_loss"], h["val_loss"]) for h in b.history]
    assert all(np.array_equal(x, y) for x, y in zip(weights_of(a.model), weights_of(b.model)))


def test_the_callers_threads_are_restored_when_a_training_fails(threads):
    cells = make_binary(4, size=SIZE, seed=1)
    threads(2)

    def stop(_record):
        assert torch.get_num_threads() == TRAINING_THREADS  # inside: the fixed count
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        train_model(cells, np.arange(4), np.arange(4, 8), TrainConfig.binary(max_epochs=1),
                    seed=0, on_epoch=stop)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("fused", [True, False], ids=["fused kernels", "torch layers"])
def test_predicted_probabilities_do_not_depend_on_the_callers_threads(threads, fused):
    # Batches of 6: at 5 to 11 rows MKL's matrix product sums otherwise at 2 threads than
    # at 1, so the dense layers must run at a fixed count (1 ulp apart before they did).
    cells = make_binary(12, size=SIZE, seed=2)
    model = build_model(ModelConfig(input_size=SIZE), seed=5)
    with torch.no_grad():  # trained-looking weights: nonzero biases, no dead hidden units
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    probs = []
    for n in (1, 2):
        threads(n)
        if fused:
            probs.append(predict_proba(model, cells.images, batch_size=6))
        else:
            with kernels.disabled():
                probs.append(predict_proba(model, cells.images, batch_size=6))
        assert torch.get_num_threads() == n
    assert np.array_equal(probs[0], probs[1])


def test_stored_configs_with_threads_still_read():
    # "threads" was a setting until the count was fixed; config.json and train_config.json
    # files written then hold it.
    old = {**TrainConfig.binary(max_epochs=7).to_dict(), "threads": 4}
    assert TrainConfig.from_dict(old) == TrainConfig.binary(max_epochs=7)
    assert "threads" not in TrainConfig().to_dict()
    with pytest.raises(TypeError):
        TrainConfig(threads=2)  # no longer a setting of a new config


# ---- a real sweep with --jobs 1, --jobs 2, and one cut and resumed ------------------

CONFIG = SweepConfig("all", ProtocolOptions(folds=4, sizes=(4, 8), run_folds=2),
                     TrainConfig.binary(max_epochs=3, patience=3), "auc")


def snapshot(path) -> dict:
    """Per job: what it computed (metric, epochs, losses, test probabilities, weights) and
    how it ran; nothing measured in seconds."""
    out = {}
    with RunStore.open(path) as store:
        for r in store.results():
            weights = load_file(store.weights_path(r.job_id))
            out[r.job_id] = {
                "row": (r.metric, r.best_epoch, r.epochs_run, r.degenerate, r.restarts, r.seed,
                        r.kernels, r.threads, r.device),
                "losses": [(h["train_loss"], h["val_loss"]) for h in store.history(r.job_id)],
                "probs": store.predictions(r.job_id).probs.tolist(),
                "weights": {k: v.tolist() for k, v in weights.items()},
            }
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same sweep with --jobs 1 (training in this process, at 2 threads), with --jobs 2
    (workers at 1 thread each), and cut after 2 jobs of --jobs 1 then resumed with
    --jobs 2; the warnings of the resume."""
    root = tmp_path_factory.mktemp("determinism")
    cells = make_binary(8, size=SIZE, seed=4)
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(workers, "cores", lambda: 2)  # 2 cores // 2 jobs: 1 thread per worker
        torch.set_num_threads(2)
        try:
            reports = {
                "one": sweep_dataset(cells, CONFIG, root / "one", jobs=1, progress=False),
                "two": sweep_dataset(cells, CONFIG, root / "two", jobs=2, progress=False),
                "cut": sweep_dataset(cells, CONFIG, root / "cut", jobs=1, max_jobs=2,
                                     progress=False),
            }
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reports["resumed"] = sweep_dataset(cells, CONFIG, root / "cut", jobs=2,
                                                   progress=False)
        finally:
            torch.set_num_threads(before)
    return root, reports, [str(w.message) for w in caught]


@pytest.mark.slow
def test_a_sweep_computes_the_same_with_jobs_1_and_jobs_2(runs):
    root, reports, _ = runs
    assert reports["one"].done == reports["two"].done == 4
    assert reports["one"].failures == reports["two"].failures == []
    one, two = snapshot(root / "one"), snapshot(root / "two")
    assert one.keys() == two.keys() and len(one) == 4
    for job_id in one:
        assert one[job_id] == two[job_id], job_id
    assert {job["row"][-3:] for job in one.values()} == {(kernels.enabled(), TRAINING_THREADS,
                                                          "cpu")}


@pytest.mark.slow
def test_a_sweep_cut_with_jobs_1_and_resumed_with_jobs_2_equals_an_uninterrupted_one(runs):
    root, reports, caught = runs
    assert reports["cut"].done == 2
    assert (reports["resumed"].skipped, reports["resumed"].done) == (2, 2)
    assert snapshot(root / "cut") == snapshot(root / "one")
    assert not [m for m in caught if "finished jobs ran with" in m]  # ran alike: no warning


# ---- the resume warning ----------------------------------------------------------------

class HowRunner(TrainingRunner):
    """The real runner's `how_it_runs` with a fake training that records how it ran as
    the real one does: no network is trained."""

    def __call__(self, cells, job):
        how = self.how_it_runs()
        return JobOutcome(metric=0.5, best_epoch=1, epochs_run=1, seconds=0.0,
                          degenerate=False, test_probs=np.full((len(job.test_idx), 2), 0.5),
                          history=[], kernels=how.kernels, threads=how.threads,
                          device=how.device)


def tiny_cells() -> CellImages:
    rng = np.random.default_rng(0)
    return CellImages(rng.integers(0, 255, (16, 4, 4, 3), dtype=np.uint8), np.arange(16) % 2,
                      ("other", "blast"), tuple(f"img{i}" for i in range(16)))


def resume_warnings(tmp_path, edit: str | None = None, kernels_off: bool = False) -> list[str]:
    """Run 2 of the 4 jobs, apply `edit` (SQL SET clause) to their rows, resume the rest
    (with the kernels off if asked) and return the resume's warnings."""
    cells, runner = tiny_cells(), HowRunner(CONFIG.train)
    first = sweep_dataset(cells, CONFIG, tmp_path, runner=runner, max_jobs=2, progress=False)
    assert first.done == 2
    if edit:
        with sqlite3.connect(tmp_path / "run.sqlite") as conn:
            conn.execute(f"UPDATE jobs SET {edit}")
        conn.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kernels_off:
            with kernels.disabled():
                report = sweep_dataset(cells, CONFIG, tmp_path, runner=runner, progress=False)
        else:
            report = sweep_dataset(cells, CONFIG, tmp_path, runner=runner, progress=False)
    assert (report.skipped, report.done) == (2, 2)
    return [str(w.message) for w in caught if "finished jobs ran with" in str(w.message)]


def test_no_warning_when_the_stored_jobs_ran_alike(tmp_path):
    assert resume_warnings(tmp_path) == []


def test_no_warning_when_the_stored_jobs_did_not_record_how_they_ran(tmp_path):
    # As in a run of a version before run.sqlite schema 3: nothing is known.
    assert resume_warnings(tmp_path, "kernels = NULL, threads = NULL, device = NULL") == []


def test_a_resume_on_another_device_warns_once_naming_it(tmp_path):
    (message,) = resume_warnings(tmp_path, "device = 'cuda', kernels = 0")
    assert "2 of the 2 finished jobs ran with device cuda" in message
    assert "this process trains with device cpu" in message
    assert "last float digits" in message and "\n" not in message  # one line in the CLI
    if kernels.enabled():
        assert "fused kernels off" in message and "fused kernels on" in message


@pytest.mark.skipif(not kernels.enabled(), reason="needs the fused kernels to switch them off")
def test_a_resume_without_the_kernels_warns_naming_them(tmp_path):
    (message,) = resume_warnings(tmp_path, kernels_off=True)
    assert "ran with fused kernels on; this process trains with fused kernels off" in message
    assert "device" not in message


def test_a_resume_after_cpu_jobs_with_other_threads_warns(tmp_path):
    # Runs written before the count was fixed recorded their workers' threads.
    (message,) = resume_warnings(tmp_path, "threads = 4")
    assert f"torch threads 4; this process trains with torch threads {TRAINING_THREADS}" \
        in message


def test_threads_of_a_gpu_job_do_not_matter():
    from leukolearn.runstore.resume import HowItRan, ran_otherwise

    Row = dataclasses.make_dataclass("Row", ["kernels", "threads", "device"])
    now = HowItRan(kernels=False, threads=None, device="cuda")
    assert ran_otherwise([Row(False, 8, "cuda")], now) is None
    assert "device cpu" in ran_otherwise([Row(False, 8, "cuda"), Row(False, 1, "cpu")], now)
