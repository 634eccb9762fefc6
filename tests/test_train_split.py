"""`train`'s own split and test: balanced binary sets outside ALL-IDB2, stratified
multiclass sets with enough of every class, the test metric's interval, and the warning
when the test set is too small to decide on."""
import json
from dataclasses import replace

import numpy as np
import pytest

from leukolearn.data.cellimages import CellImages, DatasetSource
from leukolearn.data.synthetic import make_binary, make_cells, write_image_folder
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.protocol import ProtocolOptions, make_plan
from leukolearn.experiments.single import (MIN_PER_CLASS, SplitSizes, balanced_split,
                                           default_split, evaluate, single_split)
from helpers import run_cli

SIZE = 190


def _cells(counts, names=None, source=None):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    names = names or tuple(f"c{i}" for i in range(len(counts)))
    return CellImages(np.zeros((len(labels), 4, 4, 3), np.uint8), labels, names,
                      [f"i{i}" for i in range(len(labels))], source=source)


def _counts(cells, job):
    return [np.bincount(cells.labels[list(part)], minlength=cells.n_classes).tolist()
            for part in (job.train_idx, job.val_idx, job.test_idx)]


def _disjoint(job):
    train, val, test = set(job.train_idx), set(job.val_idx), set(job.test_idx)
    return not (train & val or train & test or val & test)


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory):
    """10 blasts against 100 other cells, as class folders."""
    from leukolearn.data.dataset import load_dataset

    root = tmp_path_factory.mktemp("imbalanced")
    write_image_folder(make_cells({"blast": 10, "lymphocyte": 100}, size=SIZE, seed=4), root)
    return load_dataset("folder", root, positive=["blast"], progress=False)


@pytest.mark.slow
def test_a_binary_folder_split_is_balanced(imbalanced_folder):
    cells = imbalanced_folder
    assert cells.source.name == "folder" and cells.class_counts() == {"other": 100, "blast": 10}
    with pytest.warns(UserWarning) as caught:
        job = default_split(cells, SplitSizes(), seed=0)
    # test and validation: balanced, cut to what 10 blasts give (a third each; 4 train)
    train, val, test = _counts(cells, job)
    assert test == [3, 3] and val == [3, 3] and train == [94, 4]
    assert _disjoint(job)
    messages = [str(w.message) for w in caught]
    assert any("test set cut from 25 to 6 images, 3 a class" in m and "'blast' has 10" in m
               for m in messages), messages
    # The old split (the ALL protocol's stratified fold) tested on 2 or 3 blasts of 25 cells
    old = single_split(cells, SplitSizes(), seed=0)
    assert _counts(cells, old)[2][1] <= 3 and len(old.test_idx) >= 24


def test_a_balanced_binary_split_takes_half_of_each_class_where_the_data_allow():
    cells = _cells((1000, 300))
    job = balanced_split(cells, SplitSizes(train=100), seed=1)
    assert _counts(cells, job) == [[50, 50], [13, 12], [13, 12]]  # 25 = 13 + 12, as asked
    # the folds are disjoint test sets; another seed, another split
    other_fold = balanced_split(cells, SplitSizes(train=100), seed=1, fold=3)
    assert not set(other_fold.test_idx) & set(job.test_idx)
    assert balanced_split(cells, SplitSizes(train=100), seed=1) == job
    assert balanced_split(cells, SplitSizes(train=100), seed=2).test_idx != job.test_idx
    with pytest.raises(LeukolearnError, match="--fold must be between 0 and 24"):
        balanced_split(cells, SplitSizes(train=100), seed=1, fold=25)  # 300 // 12 disjoint


def test_all_idb2_keeps_the_papers_fold():
    source = DatasetSource("all-idb2", "/data/ALL_IDB2/img")
    cells = _cells((130, 130), names=("other", "blast"), source=source)
    job = default_split(cells, SplitSizes(), seed=3)
    assert job == single_split(cells, SplitSizes(200, None, 25), seed=3)
    assert len(job.test_idx) == 26 and len(job.val_idx) == 26  # 260 / 10 folds; the next fold validates
    # train --fold F is the sweep's job fF-n{size}-s0: same images, same training seed
    plan = make_plan("all", cells.labels, ProtocolOptions(sizes=(10,), seed=3))
    for fold in (0, 6, 9):
        assert default_split(cells, SplitSizes(train=10), seed=3, fold=fold) == plan[fold]
    # the same labels from another layout: the balanced split
    assert default_split(replace(cells, source=None), SplitSizes(), seed=3) != job


def test_all_idb2_with_near_duplicates_removed_trains_on_every_fold():
    """247 images make folds of 24 and 25: the default validates on the whole next fold;
    a --val-size larger than that fold says what to change."""
    cells = _cells((124, 123), names=("other", "blast"), source=DatasetSource("all-idb2", "/d"))
    sizes = [len(default_split(cells, SplitSizes(train=10), seed=0, fold=f).val_idx) for f in range(10)]
    assert set(sizes) == {24, 25}
    short = sizes.index(24)  # a fold whose next fold holds 24 images
    with pytest.raises(LeukolearnError, match="validation size 25 is more than the 24.*lower --val-size"):
        default_split(cells, SplitSizes(train=10, val=25), seed=0, fold=short)


def test_a_multiclass_split_is_stratified_with_enough_of_every_class():
    cells = _cells((50, 40, 30, 20, 60, 100))
    with pytest.warns(UserWarning, match="capped to the training pool"):
        job = default_split(cells, SplitSizes(), seed=0)
    train, val, test = _counts(cells, job)
    # the default: at least 10 test images a class (a third of the 20 of class 3 at most)
    assert test == [10, 10, 10, 6, 10, 10]
    # validation: 10 a class or 20 % of it, whichever is smaller (and at least its share of 25)
    assert val == [10, 8, 6, 4, 10, 10]
    assert _disjoint(job) and min(train) >= 1
    # sizes given: stratified, every class at least once
    given = default_split(cells, SplitSizes(train=20, val=12, test=12), seed=0)
    train, val, test = _counts(cells, given)
    assert sum(test) == 12 and min(test) >= 1 and test[5] > test[3]
    assert sum(val) >= 12 and min(val) >= 1


def test_the_test_metric_has_an_interval_that_holds_it():
    cells = _cells((30, 30), names=("other", "blast"))
    rng = np.random.default_rng(0)
    score = np.clip(cells.labels * 0.3 + rng.normal(0.35, 0.2, 60), 0, 1)
    probs = np.stack([1 - score, score], axis=1)
    metrics = evaluate(cells, np.arange(60), probs, seed=0)
    for key in ("roc_auc", "weighted_f1"):
        low, high = metrics[f"{key}_ci"]
        assert low < metrics[key] < high and high - low < 0.5, key
    assert metrics["warnings"] == [] and metrics["test_class_counts"] == {"other": 30, "blast": 30}
    assert evaluate(cells, np.arange(60), probs, seed=0) == metrics  # seeded
    # the fast statistics are sklearn's
    from leukolearn.analysis.metrics import roc_auc_by_ranks, weighted_f1_by_counts
    from leukolearn.analysis.metrics import weighted_f1

    assert roc_auc_by_ranks(cells.labels, score) == pytest.approx(metrics["roc_auc"], abs=1e-12)
    pred = probs.argmax(1)
    assert weighted_f1_by_counts(cells.labels, pred) == pytest.approx(weighted_f1(cells.labels, pred))


def test_a_small_test_set_is_named_in_a_warning():
    cells = _cells((20, 6), names=("other", "blast"))
    probs = np.stack([1 - cells.labels * 0.8, cells.labels * 0.8], axis=1)
    (message,) = evaluate(cells, np.arange(26), probs)["warnings"]
    assert "only 6 'blast' cells (fewer than 10 of a class)" in message
    assert "leukolearn sweep" in message and "leukolearn evaluate" in message
    multi = _cells((12, 12, 4), names=("a", "b", "c"))
    probs = np.eye(3)[multi.labels]
    (message,) = evaluate(multi, np.arange(28), probs)["warnings"]
    assert "only 4 'c' cells" in message and "weighted F1" in message
    assert "roc_auc_ci" not in evaluate(multi, np.arange(28), probs)
    assert MIN_PER_CLASS == 10


def test_train_prints_the_interval_and_warns_on_a_small_test_set(tmp_path, capsys):
    root = tmp_path / "cells"
    write_image_folder(make_binary(9, size=SIZE, seed=1), root)
    out = tmp_path / "model"
    code, stdout, err = run_cli(["train", "folder", root, "--positive", "blast", "--size", SIZE,
                                 "--train-size", "6", "--max-epochs", "1", "--out", out], capsys)
    assert code == 0, err
    assert "(95% CI " in stdout
    warned = [line for line in err.splitlines() if "the test set holds only" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ")
    assert "3 'other' and 3 'blast' cells" in warned[0]  # 9 a class: a third tested
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["warnings"] == [warned[0].removeprefix("warning: ")]
    assert len(metrics["roc_auc_ci"]) == 2 and metrics["test_class_counts"] == {
        "other": 3, "blast": 3}
