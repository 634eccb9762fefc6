import numpy as np
import pytest

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.single import SplitSizes, evaluate, single_split


def test_single_split_is_one_fold_of_the_all_protocol():
    labels = np.array([0] * 130 + [1] * 130)
    job = single_split(_cells(labels), SplitSizes(200, 25, 25), seed=3)
    train, val, test = set(job.train_idx), set(job.val_idx), set(job.test_idx)
    assert (len(train), len(val)) == (200, 25) and len(test) == 26  # 260 / 10 folds
    assert not (train & val or train & test or val & test)
    assert np.sum(labels[list(job.train_idx)]) == 100  # class-balanced
    assert single_split(_cells(labels), SplitSizes(200, 25, 25), seed=3) == job
    assert single_split(_cells(labels), SplitSizes(200, 25, 25), seed=4).test_idx != job.test_idx
    other_fold = single_split(_cells(labels), SplitSizes(200, 25, 25), seed=3, fold=1)
    assert not set(other_fold.test_idx) & test


def _cells(labels):
    n = len(labels)
    return CellImages(np.zeros((n, 8, 8, 3), np.uint8), np.asarray(labels), ("a", "b"),
                      [f"i{i}" for i in range(n)])


def test_infeasible_splits_are_refused_with_the_reason():
    with pytest.raises(LeukolearnError, match="class 'b' has 2"):
        single_split(_cells([0] * 18 + [1] * 2), SplitSizes(5, 5, 5), seed=0)
    with pytest.raises(LeukolearnError, match="--fold must be between 0 and 3"):
        single_split(_cells([0, 1] * 10), SplitSizes(5, 5, 5), seed=0, fold=4)


def test_training_set_shrinks_to_the_pool_with_a_warning():
    with pytest.warns(UserWarning, match="capped to the training pool"):
        job = single_split(_cells([0, 1] * 10), SplitSizes(15, 5, 5), seed=0)
    assert len(job.train_idx) == 10  # 20 - 5 test - 5 validation


def test_evaluate_reports_auc_for_two_classes():
    cells = _cells([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    metrics = evaluate(cells, np.arange(4), probs)
    assert metrics["roc_auc"] == 1.0
    assert metrics["accuracy"] == 1.0
    assert metrics["confusion"] == [[2, 0], [0, 2]]


def test_train_records_how_it_ran_in_metrics_json(tmp_path):
    """As a sweep's job row: the kernels, threads and device the training ran with."""
    import json

    from leukolearn.data.synthetic import make_binary
    from leukolearn.experiments.single import train_and_evaluate
    from leukolearn.model import kernels
    from leukolearn.training.config import TrainConfig

    cells = make_binary(10, size=190, seed=1)
    train_and_evaluate(cells, SplitSizes(6, 6, 6), TrainConfig.binary(max_epochs=1, device="cpu"),
                       seed=0, out_dir=tmp_path, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["kernels"], metrics["threads"], metrics["device"]) == (
        kernels.enabled(), 1, "cpu")
