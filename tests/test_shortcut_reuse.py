"""`shortcut --original RUN`: the original variant copies the jobs an earlier sweep finished
instead of training them again. Fake runners only: nothing is trained."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tifffile
from helpers import run_cli
from PIL import Image

from leukolearn.data.synthetic import make_binary
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.variants import ShortcutMasks
from leukolearn.experiments.shortcut import run_shortcut
from leukolearn.experiments.presets import SweepConfig
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.runstore.store import RunStore
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.experiments.sweep import sweep_dataset
from leukolearn.training.config import TrainConfig


class CountingRunner:
    """Remembers which images (by fingerprint) each job was run on; keeps a tiny network
    as its "model" so that weights files are written and copied."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []  # (fingerprint, job_id)

    def __call__(self, cells, job):
        self.calls.append((cells.fingerprint, job.job_id))
        rng = np.random.default_rng(job.seed)
        return JobOutcome(metric=0.5 + job.size / 100, best_epoch=2, epochs_run=3, seconds=0.0,
                          degenerate=False, test_probs=rng.dirichlet([1, 1], len(job.test_idx)),
                          history=[{"epoch": 1, "val_loss": 0.3}],
                          model=build_model(ModelConfig(input_size=8, filters=(2,), hidden=2),
                                            seed=job.seed % 997))

    def jobs_on(self, cells):
        return [job_id for fingerprint, job_id in self.calls if fingerprint == cells.fingerprint]


def config(sizes=(2, 4), run_folds=None, **train) -> SweepConfig:
    return SweepConfig("all", ProtocolOptions(folds=3, sizes=sizes, run_folds=run_folds),
                       TrainConfig.binary(**{"max_epochs": 1, "patience": 1, "augment": False,
                                             **train}), "auc")


def given_masks(cells) -> ShortcutMasks:
    return ShortcutMasks(np.asarray(cells.masks), "given")


def sweep(cells, cfg, path):
    sweep_dataset(cells, cfg, path, runner=CountingRunner(), progress=False)
    return path


def shortcut(cells, cfg, out, original, runner=None):
    return run_shortcut(cells, cfg, out, masks=given_masks(cells), original=original,
                        runner=runner or CountingRunner(), progress=False)


def snapshot(path, job_ids):
    """Each job's row, split, predictions, history and weights bytes, as plain values."""
    with RunStore.open(path) as store:
        return {r.job_id: (dataclasses.replace(r, weights=None),  # the path may differ
                           [a.tolist() for a in store.split(r.job_id)],
                           [a.tolist() for a in dataclasses.astuple(store.predictions(r.job_id))],
                           store.history(r.job_id), store.weights_path(r.job_id).read_bytes())
                for r in store.results() if r.job_id in job_ids}


def test_original_jobs_are_copied_and_only_the_missing_ones_trained(tmp_path):
    cells = make_binary(6, size=32)
    # The sweep ran all 3 folds of sizes 2 and 4 with another device (result-neutral).
    run = sweep(cells, config(device="auto"), tmp_path / "run")
    runner = CountingRunner()
    # The control: 2 folds of sizes 2 (in the sweep) and 3 (not in it).
    result = shortcut(cells, config(sizes=(2, 3), run_folds=2), tmp_path / "sc", run, runner)
    copied = {"f00-n2-s0", "f01-n2-s0"}
    assert result.reused == 2
    assert sorted(runner.jobs_on(cells)) == ["f00-n3-s0", "f01-n3-s0"]
    assert len(runner.calls) == 2 + 4 + 4  # original: the missing; the variants: all
    assert result.reports["original"].skipped == 2 and result.reports["original"].done == 2
    theirs = snapshot(run, copied)
    assert len(theirs) == 2 and snapshot(tmp_path / "sc" / "original", copied) == theirs

    again = CountingRunner()  # a resume copies and trains nothing
    assert shortcut(cells, config(sizes=(2, 3), run_folds=2), tmp_path / "sc", run,
                    again).reused == 0
    assert again.calls == []


def test_a_job_whose_weights_are_gone_is_trained_again(tmp_path):
    cells = make_binary(6, size=32)
    run = sweep(cells, config(), tmp_path / "run")
    with RunStore.open(run) as store:
        store.weights_path("f00-n2-s0").unlink()
    runner = CountingRunner()
    result = shortcut(cells, config(sizes=(2,), run_folds=2), tmp_path / "sc", run, runner)
    assert result.reused == 1 and runner.jobs_on(cells) == ["f00-n2-s0"]


@pytest.mark.parametrize("other, message", [
    (dict(cfg=config(max_epochs=5)), r"with other settings \(train\.max_epochs: 5 -> 1\)"),
    (dict(cfg=config().with_options(seed=1)), r"with other settings \(options\.seed: 1 -> 0\)"),
    (dict(cells=make_binary(6, size=32, seed=1)), "on other images"),
])
def test_a_run_with_other_settings_or_images_is_refused(tmp_path, other, message):
    cells = make_binary(6, size=32)
    run = sweep(other.get("cells", cells), other.get("cfg", config()), tmp_path / "run")
    with pytest.raises(LeukolearnError, match="--original .* was swept " + message):
        shortcut(cells, config(), tmp_path / "sc", run)
    assert not (tmp_path / "sc" / "original").exists()  # refused before writing anything


# --------------------------------------------------------------------------- the command

SIZE = 190  # the network's smallest input: the CLI checks the model fits the images
MASK_RGB = {0: (255, 255, 255), 1: (0, 0, 255), 2: (0, 255, 255)}  # ALL-IDB2's mask colours


def all_idb2_with_masks(tmp_path):
    """ALL-IDB2's layout (ImNNN_L files) and a folder of expert masks."""
    cells = make_binary(6, size=SIZE)
    img, masks = tmp_path / "img", tmp_path / "masks"
    img.mkdir()
    masks.mkdir()
    for k, (image, mask, label) in enumerate(zip(cells.images, cells.masks, cells.labels)):
        stem = f"Im{k + 1:03d}_{label}"
        Image.fromarray(image).save(img / f"{stem}.png")
        rgb = np.zeros(mask.shape + (3,), np.uint8)
        for code, colour in MASK_RGB.items():
            rgb[mask == code] = colour
        tifffile.imwrite(masks / f"{stem}.tif", rgb)
    return img, masks


@pytest.mark.slow
def test_the_command_reuses_a_sweep_loaded_without_masks(tmp_path, capsys, monkeypatch):
    # The paper sweep is loaded without --masks, the control with them: the same images,
    # so the same fingerprint (no network reads the masks), and the jobs carry over.
    runner = CountingRunner()
    monkeypatch.setattr("leukolearn.experiments.sweep.TrainingRunner", lambda *a, **k: runner)
    img, masks = all_idb2_with_masks(tmp_path)
    common = ["--size", SIZE, "--preset", "quick", "--folds", 3, "--no-progress"]
    code, _, err = run_cli(["sweep", "all-idb2", img, "--out", tmp_path / "run", "--sizes", "2,4",
                            *common], capsys)
    assert code == 0, err
    swept = len(runner.calls)
    code, _, err = run_cli(["shortcut", "all-idb2", img, "--out", tmp_path / "sc", "--masks",
                            masks, "--original", tmp_path / "run", "--sizes", "4",
                            "--run-folds", 2, *common], capsys)
    assert code == 0, err
    assert f"original: 2 finished jobs copied from {tmp_path / 'run'}" in err
    assert len(runner.calls) - swept == 4  # cell-only and background-only, 2 jobs each
    with RunStore.open(tmp_path / "sc" / "original") as store, \
            RunStore.open(tmp_path / "run") as swept_store:
        assert sorted(store.finished_ids()) == ["f00-n4-s0", "f01-n4-s0"]
        assert store.dataset_info.fingerprint == swept_store.dataset_info.fingerprint

    code, _, err = run_cli(["shortcut", "all-idb2", img, "--out", tmp_path / "sc2", "--masks",
                            masks, "--original", tmp_path / "run", "--sizes", "4",
                            "--max-epochs", 2, *common], capsys)
    assert code == 2 and "--original" in err and "train.max_epochs: 30 -> 2" in err


def test_help_mentions_the_option(capsys):
    code, out, _ = run_cli(["shortcut", "--help"], capsys)
    assert code == 0 and "--original" in out


def test_a_copy_that_cannot_be_saved_leaves_no_weights_file(tmp_path, monkeypatch):
    import sqlite3

    cells = make_binary(6, size=32)
    run = sweep(cells, config(), tmp_path / "run")
    target = sweep(cells, config(sizes=(4,)), tmp_path / "target")

    def full_disk(self, values):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RunStore, "_write_row", full_disk)
    with RunStore.open(run) as source, RunStore.create_or_resume(
            target, config=config(sizes=(4,)), dataset=source.dataset_info) as store:
        with pytest.raises(LeukolearnError, match="could not save job f00-n2-s0"):
            store.copy_job_from(source, "f00-n2-s0")
    assert not (target / "weights" / "f00-n2-s0.safetensors").exists()
    assert not list((target / "weights").glob(".*tmp*"))


def test_summary_files_hold_null_and_empty_cells_for_missing_numbers(tmp_path):
    import json
    import math

    from leukolearn.experiments.shortcut import write_summary

    row = {"size": 10, "n": 1, "median": 0.91234, "q1": 0.9, "q3": 0.92, "mean": 0.91234,
           "sd": math.nan, "values": [0.91234]}  # one job: no s.d.
    summary = {"metric": "auc", "variants": {
        "original": {"rows": [row, {**row, "size": 20}], "fill": [1, 2, 3], "masks": None},
        "cell-only": {"rows": [row], "fill": [1, 2, 3], "masks": "expert"}}}
    json_path, csv_path = write_summary(tmp_path, summary)

    def no_nan_token(token):
        raise AssertionError(f"{token} in JSON")

    stored = json.loads(json_path.read_text(), parse_constant=no_nan_token)
    assert stored["variants"]["original"]["rows"][0]["sd"] is None
    assert stored["variants"]["original"]["rows"][0]["mean"] == 0.91234
    assert csv_path.read_text().splitlines() == [
        "size,original_median,original_n,cell-only_median,cell-only_n",
        "10,0.9123,1,0.9123,1",
        "20,0.9123,1,,0",  # cell-only has no job at size 20
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shortcut.csv", "shortcut.json"]
    write_summary(tmp_path, {"variants": {}})  # nothing swept yet: an empty table
    assert csv_path.read_text() == ""
