import numpy as np
import pytest

from leukolearn.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.experiment import SplitSizes, evaluate, fit_split_to_data, stratified_split


def test_split_is_disjoint_balanced_and_seeded():
    labels = np.array([0] * 130 + [1] * 130)
    split = stratified_split(labels, SplitSizes(200, 25, 25), seed=3)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert [len(p) for p in parts] == [200, 25, 25]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert abs(np.sum(labels[split.test]) - 12.5) <= 0.5
    assert np.sum(labels[split.train]) == 100
    again = stratified_split(labels, SplitSizes(200, 25, 25), seed=3)
    assert np.array_equal(split.train, again.train)
    other = stratified_split(labels, SplitSizes(200, 25, 25), seed=4)
    assert not np.array_equal(split.test, other.test)


def test_split_gives_leftover_turns_to_larger_classes():
    labels = np.array([0] * 90 + [1] * 10)
    split = stratified_split(labels, SplitSizes(60, 10, 10), seed=0)
    assert np.sum(labels[split.test] == 1) == 5
    assert np.sum(labels[split.train] == 1) == 0  # the small class is used up by test + val
    assert len(split.train) == 60


def _cells(labels):
    n = len(labels)
    return CellImages(np.zeros((n, 8, 8, 3), np.uint8), np.asarray(labels), ("a", "b"),
                      [f"i{i}" for i in range(n)])


def test_infeasible_splits_are_refused_with_the_reason():
    with pytest.raises(LeukolearnError, match="has only 20"):
        fit_split_to_data(_cells([0, 1] * 10), SplitSizes(15, 10, 10))
    with pytest.raises(LeukolearnError, match="class 'b' has 2"):
        fit_split_to_data(_cells([0] * 18 + [1] * 2), SplitSizes(5, 5, 5))


def test_training_set_shrinks_to_what_is_left_with_a_note():
    sizes, note = fit_split_to_data(_cells([0, 1] * 10), SplitSizes(15, 5, 5))
    assert sizes == SplitSizes(10, 5, 5)
    assert "training on 10 instead of 15" in note
    assert fit_split_to_data(_cells([0, 1] * 10), SplitSizes(8, 5, 5))[1] == ""


def test_evaluate_reports_auc_for_two_classes():
    cells = _cells([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    metrics = evaluate(cells, np.arange(4), probs)
    assert metrics["roc_auc"] == 1.0
    assert metrics["accuracy"] == 1.0
    assert metrics["confusion"] == [[2, 0], [0, 2]]
