"""A run directory and a model file written by leukolearn 0.1.0, before the move to
subpackages (tests/fixtures/make_v010_fixture.py made them with that version), still load,
resume and predict as 0.1.0 computed them.

Only text and run.sqlite are in git: the images are made again here (the synthetic
generator, as BMP), and so are the weights files: the model file as 0.1.0's
save_model wrote it (its seeded network, and the metadata 0.1.0 wrote, checksum included),
the run's job weights as seeded networks (the run's tests read them, not their values)."""
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "v010"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def old(tmp_path):
    """A writable copy (a resume writes into the run) with its images and weights files."""
    from safetensors.torch import save_file

    from leukolearn.data.synthetic import make_binary, write_image_folder
    from leukolearn.model.cnn import ModelConfig, build_model
    from leukolearn.model.weights import save_model
    from leukolearn.runstore.store import RunStore

    root = tmp_path / "v010"
    shutil.copytree(FIXTURE, root)
    images = EXPECTED["images"]
    write_image_folder(make_binary(images["n_per_class"], size=images["size"],
                                   seed=images["seed"]), root / "images", ext=images["ext"])
    config = json.loads(EXPECTED["model"]["metadata"]["model_config"])
    network = build_model(ModelConfig(**config), seed=EXPECTED["model"]["seed"])
    save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()},
              str(root / "model.safetensors"), metadata=EXPECTED["model"]["metadata"])
    with RunStore.open(root / "run") as store:
        for record in store.results():
            save_model(build_model(ModelConfig(**config), seed=record.seed),
                       store.weights_path(record.job_id))
    return root


@pytest.fixture
def one_thread():
    # 0.1.0 computed the expected numbers with one torch thread: the same float sums.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cells(root: Path):
    from leukolearn.data.dataset import load_dataset

    return load_dataset("folder", root / "images", positive=["blast"], progress=False)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a is None and isinstance(b, float) and math.isnan(b)) \
        or (b is None and isinstance(a, float) and math.isnan(a))


def test_old_run_loads_with_its_results_and_summary(old):
    from leukolearn.analysis.summary import summarize_store
    from leukolearn.runstore.store import RunStore

    with RunStore.open(old / "run") as store:
        records = {r.job_id: r for r in store.results()}
        assert set(records) == set(EXPECTED["jobs"])
        for job_id, want in EXPECTED["jobs"].items():
            got = records[job_id]
            assert (got.metric, got.best_epoch, got.epochs_run, got.seed) == \
                (want["metric"], want["best_epoch"], want["epochs_run"], want["seed"])
            assert got.restarts == 0
        assert _same(summarize_store(store).to_dict(), EXPECTED["summary"])


def test_old_run_resumes_to_what_the_old_version_computed(old, one_thread):
    from leukolearn.experiments.presets import SweepConfig
    from leukolearn.experiments.sweep import sweep_dataset
    from leukolearn.model import kernels
    from leukolearn.runstore.store import RunStore

    run = old / "run"
    config = SweepConfig.from_dict(json.loads((run / "config.json").read_text()))
    dataset = json.loads((run / "dataset.json").read_text())
    report = sweep_dataset(_cells(old), config, run, dataset_name=dataset["name"],
                           dataset_root=dataset["root"], load_options=dataset["load_options"],
                           progress=False)
    assert (report.skipped, report.done, report.failed) == (2, 2, 0)
    # 0.1.0 trained with the fused C kernels. PyTorch's own layers (LEUKOLEARN_KERNELS=0, or
    # no compiler) sum in another order, and RMSprop carries that through 4 epochs to about
    # 2e-3 in the probabilities: the same training, not the same float sums.
    exact = kernels.enabled()
    with RunStore.open(run) as store:
        for job_id, want in EXPECTED["resumed"].items():
            record = next(r for r in store.results() if r.job_id == job_id)
            assert record.epochs_run == want["epochs_run"]
            if exact:
                assert record.metric == pytest.approx(want["metric"], abs=1e-9)
            np.testing.assert_allclose(store.predictions(job_id).probs, want["test_probs"],
                                       atol=1e-4 if exact else 2e-2)


def test_old_model_file_predicts_as_before(old):
    from leukolearn.model.weights import load_model
    from leukolearn.training.loop import predict_proba

    model = load_model(old / "model.safetensors")
    cells = _cells(old)
    assert list(cells.image_ids) == EXPECTED["image_ids"]
    np.testing.assert_allclose(predict_proba(model, cells.images), EXPECTED["model_probs"],
                               atol=1e-5)


def test_old_model_file_and_run_work_from_the_command_line(old, capsys):
    expected = {image_id: probs[1] for image_id, probs in
                zip(EXPECTED["image_ids"], EXPECTED["model_probs"])}
    for source, out in ((old / "model.safetensors", old / "pred-model"), (old / "run", old / "pred-run")):
        code, _, err = run_cli(["predict", source, old / "images", "--out", out, "--raw-count"],
                               capsys)
        assert code == 0, err
        with open(out / "cells.csv", newline="") as f:
            rows = {Path(r["path"]).relative_to(old / "images").as_posix(): float(r["p_blast"])
                    for r in csv.DictReader(f)}
        assert rows.keys() == expected.keys()
        if source.name == "model.safetensors":  # the run is an ensemble of its fold models
            assert rows == pytest.approx(expected, abs=1e-5)
