"""The baselines (`experiments.methods`, `model.handcrafted`): each learns a synthetic task
it can see (AUC > 0.9) and scores ~0.5 where the labels carry nothing it can see; the
registry lists and selects them; a sweep runs them through the same protocol and store."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import run_cli
from leukolearn.analysis.metrics import roc_auc
from leukolearn.data.cellimages import CellImages
from leukolearn.data.synthetic import make_binary
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.methods import MODELS, FeatureRunner, check_model
from leukolearn.experiments.presets import SweepConfig, get_preset
from leukolearn.experiments.protocol import Job

SIZE = 96


@pytest.fixture(scope="module")
def cells():
    return make_binary(40, size=SIZE, seed=5)  # 80 cells: blasts and others


def tinted(cells: CellImages) -> CellImages:
    """The same cells with a batch effect: every blast photographed on a bluer background."""
    images = cells.images.astype(np.int16)
    side = images.shape[1]
    ring = np.ones((side, side), dtype=bool)
    ring[8:side - 8, 8:side - 8] = False
    blasts = cells.labels == 1
    images[np.ix_(blasts, *np.nonzero(ring))] += np.array([-15, -5, 20], dtype=np.int16)
    return CellImages(np.clip(images, 0, 255).astype(np.uint8), cells.labels, cells.class_names,
                      cells.image_ids)


def job(n: int, seed: int = 0) -> Job:
    order = np.random.default_rng(seed).permutation(n)
    return Job("f00-n50-s0", fold=0, size=50, replicate=0, seed=seed,
               train_idx=tuple(order[:50]), val_idx=(), test_idx=tuple(order[50:]))


def shuffled(cells: CellImages, seed: int = 1) -> CellImages:
    labels = np.random.default_rng(seed).permutation(cells.labels)
    return CellImages(cells.images, labels, cells.class_names, cells.image_ids)


@pytest.mark.parametrize("name, data", [("handcrafted-logreg", lambda c: c),
                                        ("background-logreg", tinted)])
@pytest.mark.slow
def test_each_baseline_learns_what_it_can_see(cells, name, data):
    runner = FeatureRunner(MODELS[name].feature_set)
    data = data(cells)
    outcome = runner(data, job(len(data.labels)))
    assert outcome.metric > 0.9 and outcome.model is None and outcome.test_probs.shape[1] == 2
    # The labels shuffled: nothing to learn; the AUC is near chance over several draws.
    chance = [runner(shuffled(data, s), job(len(data.labels), s)).metric for s in range(5)]
    assert 0.3 < np.mean(chance) < 0.7


def test_the_background_baseline_does_not_see_the_cell(cells):
    runner = FeatureRunner("background")
    assert runner(cells, job(len(cells.labels))).metric < 0.8  # same background for both


@pytest.mark.slow
def test_a_baseline_under_stain_normalisation_sees_the_normalised_images(cells):
    """The robust-stain presets normalise every image the CNN sees (fitted on the job's
    training cells); a baseline run under them must see the same images, or `sweep --model`
    would compare methods on different data."""
    from dataclasses import replace

    from leukolearn.data.stain import fit_stain, normalise
    from leukolearn.experiments.methods import runner_for
    from leukolearn.model.handcrafted import class_probabilities, extract, make_classifier

    data, split = tinted(cells), job(len(cells.labels))
    train, test = np.asarray(split.train_idx), np.asarray(split.test_idx)
    normalised = normalise(data.images, fit_stain(data.images[train]))
    features = extract(normalised, "background")
    expected = class_probabilities(make_classifier(split.seed).fit(
        features[train], data.labels[train]), features[test], 2)
    outcome = FeatureRunner("background", stain_norm="reinhard")(data, split)
    np.testing.assert_allclose(outcome.test_probs, expected, atol=1e-5)
    plain = FeatureRunner("background")(data, split)
    assert np.abs(plain.test_probs - outcome.test_probs).max() > 0.05
    config = replace(get_preset("robust-stain-all-binary"), model="background-logreg")
    assert runner_for(config).stain_norm == "reinhard"
    assert runner_for(replace(get_preset("paper-all-binary"), model="background-logreg")).stain_norm is None


def test_registry_lists_and_selects_models(capsys):
    assert check_model("handcrafted-logreg").feature_set == "cell"
    with pytest.raises(LeukolearnError, match="unknown model 'resnet'"):
        check_model("resnet")
    config = get_preset("paper-all-binary")
    assert config.model == "paper-cnn"
    stored = config.to_dict()
    del stored["model"]  # a run made before baselines existed
    assert SweepConfig.from_dict(stored) == config
    code, out, _ = run_cli(["models", "--json"], capsys)
    assert code == 0 and set(json.loads(out)) == set(MODELS)


@pytest.mark.slow
def test_a_sweep_runs_a_baseline_through_the_protocol_and_store(cells, tmp_path, capsys):
    from leukolearn.data.synthetic import write_image_folder
    from leukolearn.runstore.store import RunStore

    root = tmp_path / "cells"
    write_image_folder(cells, root)
    out = tmp_path / "run"
    code, _, err = run_cli(["sweep", "folder", root, "--out", out, "--preset", "quick",
                            "--folds", "3", "--run-folds", "2", "--sizes", "10,30",
                            "--size", SIZE, "--positive", "blast", "--keep-duplicates",
                            "--model", "handcrafted-logreg", "--no-progress"], capsys)
    assert code == 0, err
    with RunStore.open(out) as store:
        results = store.results()
        assert store.config_dict["model"] == "handcrafted-logreg"
    assert len(results) == 4 and all(r.weights is None for r in results)
    largest = max(r.size for r in results)
    assert np.mean([r.metric for r in results if r.size == largest]) > 0.8


@pytest.mark.slow  # three sweeps through the CLI
def test_compare_puts_methods_side_by_side_in_the_same_folds(cells, tmp_path, capsys):
    import csv

    from leukolearn.data.synthetic import write_image_folder

    root = tmp_path / "cells"
    write_image_folder(tinted(cells), root)
    common = ["sweep", "folder", root, "--preset", "quick", "--folds", "3", "--run-folds", "2",
              "--sizes", "10,20", "--size", SIZE, "--positive", "blast", "--keep-duplicates",
              "--no-progress"]
    for model, seed in (("handcrafted-logreg", 0), ("background-logreg", 0),
                        ("background-logreg", 9)):
        out = tmp_path / f"{model}-{seed}"
        code, _, err = run_cli([*common, "--out", out, "--model", model, "--seed", seed], capsys)
        assert code == 0, err
    code, _, err = run_cli(["compare", tmp_path / "handcrafted-logreg-0",
                            tmp_path / "background-logreg-0", "--labels", "cell,background",
                            "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "cmp" / "summary.csv").open()))
    assert [(r["method"], r["size"]) for r in rows] == [
        ("cell", "10"), ("cell", "20"), ("background", "10"), ("background", "20")]
    assert (tmp_path / "cmp" / "methods_vs_size.png").stat().st_size > 1000
    paired = list(csv.DictReader((tmp_path / "cmp" / "paired.csv").open()))
    assert [(r["method"], r["reference"], r["size"], r["n_folds"]) for r in paired] == [
        ("background", "cell", "10", "2"), ("background", "cell", "20", "2")]
    page = (tmp_path / "cmp" / "compare.html").read_text(encoding="utf-8")
    assert "Against cell, fold by fold" in page and "data:image/png;base64," in page
    assert "<script" not in page and "http" not in page.split("<footer>")[0]
    code, _, err = run_cli(["compare", tmp_path / "handcrafted-logreg-0",
                            tmp_path / "background-logreg-9", "--out", tmp_path / "cmp2"], capsys)
    assert code == 2 and "not the same folds" in err


def test_a_cnn_kind_sets_the_width_and_a_mismatch_is_refused():
    from dataclasses import replace

    from leukolearn.experiments.presets import sweep_config

    assert sweep_config("all-idb2", model="wide-cnn").train.width == 4
    assert sweep_config("all-idb2", model="handcrafted-logreg").train.width == 1
    config = get_preset("paper-all-binary")
    assert config.train.width == 1
    with pytest.raises(LeukolearnError, match="4x the paper's filters"):
        replace(config, model="wide-cnn")
    with pytest.raises(LeukolearnError, match="width must be"):
        replace(config.train, width=0)


def test_a_baseline_refuses_a_head_start():
    from dataclasses import replace

    config = get_preset("paper-all-binary")
    with pytest.raises(LeukolearnError, match="--init-from"):
        replace(config, model="handcrafted-logreg", train=replace(config.train, init_from="/m"))


def test_paired_keeps_per_size_only_the_jobs_every_run_with_that_size_finished():
    from types import SimpleNamespace as R

    from leukolearn.analysis.summary import paired_records

    def rec(fold, size, status="done"):
        return R(job_id=f"f{fold:02d}-n{size}-s0", fold=fold, size=size, replicate=0, status=status)

    runs = {"cnn": [rec(0, 10), rec(1, 10), rec(2, 10, "failed"), rec(0, 197)],
            "baseline": [rec(0, 10), rec(2, 10), rec(0, 197), rec(1, 197)],
            "robust": [rec(0, 197), rec(1, 197)]}  # no size 10: does not restrict it
    kept = {name: sorted(r.job_id for r in recs) for name, recs in paired_records(runs).items()}
    assert kept == {"cnn": ["f00-n10-s0", "f00-n197-s0"], "baseline": ["f00-n10-s0", "f00-n197-s0"],
                    "robust": ["f00-n197-s0"]}
