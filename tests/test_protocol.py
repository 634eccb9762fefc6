"""Properties of the paper's splits, checked on label arrays alone (no images, no training)."""
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.protocol import (ProtocolOptions, balanced_order, default_options, keep_classes, make_plan)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def labels_arrays(draw, min_per_class=6, max_per_class=60):
    n_classes = draw(st.integers(2, 4))
    counts = [draw(st.integers(min_per_class, max_per_class)) for _ in range(n_classes)]
    labels = np.repeat(np.arange(n_classes), counts)
    # Shuffled so that index order carries no class information.
    return np.random.default_rng(draw(st.integers(0, 2**16))).permutation(labels)


@st.composite
def all_cases(draw):
    labels = draw(labels_arrays())
    folds = draw(st.integers(3, 6))
    pool = len(labels) - 2 * (len(labels) // folds + 1)
    sizes = sorted(draw(st.sets(st.integers(1, max(1, pool)), min_size=1, max_size=4)))
    return labels, ProtocolOptions(folds=folds, sizes=tuple(sizes), seed=draw(st.integers(0, 99)))


def by_fold(plan):
    folds = {}
    for job in plan:
        folds.setdefault(job.fold, []).append(job)
    return folds


def assert_disjoint(job):
    train, val, test = set(job.train_idx), set(job.val_idx), set(job.test_idx)
    assert not train & val and not train & test and not val & test, job.job_id


def assert_nested_and_balanced(jobs, labels):
    """Each larger training set contains the smaller; class counts differ by at most one
    unless a class has no images left in the pool."""
    jobs = sorted(jobs, key=lambda j: j.size)
    pool = set(range(len(labels))) - set(jobs[0].val_idx) - set(jobs[0].test_idx)
    pool_counts = np.bincount(labels[sorted(pool)], minlength=labels.max() + 1)
    for small, large in zip(jobs, jobs[1:]):
        assert set(small.train_idx) <= set(large.train_idx)
    for job in jobs:
        assert len(job.train_idx) == job.size
        counts = np.bincount(labels[list(job.train_idx)], minlength=labels.max() + 1)
        for c in range(len(counts)):
            if counts[c] < pool_counts[c]:  # class c not exhausted: nobody may lead it by 2
                assert counts.max() - counts[c] <= 1, (job.job_id, counts)


@FAST
@given(all_cases())
def test_all_protocol_properties(case):
    labels, options = case
    plan = make_plan("all", labels, options)
    folds = by_fold(plan)
    assert sorted(folds) == list(range(options.folds))
    tested = np.concatenate([folds[f][0].test_idx for f in folds])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # every image tested exactly once
    for f, jobs in folds.items():
        test = np.array(jobs[0].test_idx)
        # stratified: each class's count in a fold is within 1 of its share
        counts = np.bincount(labels[test], minlength=labels.max() + 1)
        share = np.bincount(labels) / options.folds
        assert np.all(np.abs(counts - share) < 1)
        # validation is the next fold's test set
        nxt = folds[(f + 1) % options.folds][0]
        assert jobs[0].val_idx == nxt.test_idx
        for job in jobs:
            assert_disjoint(job)
            assert job.test_idx == jobs[0].test_idx and job.val_idx == jobs[0].val_idx
        assert_nested_and_balanced(jobs, labels)


@FAST
@given(labels_arrays(min_per_class=30, max_per_class=80), st.integers(2, 5), st.integers(0, 99))
def test_aml_protocol_properties(labels, folds, seed):
    options = ProtocolOptions(folds=folds, sizes=(4, 10, 20), test_size=12, val_size=6, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small data: the test set may shrink
        plan = make_plan("aml", labels, options)
    folds_ = by_fold(plan)
    tests = [set(jobs[0].test_idx) for jobs in folds_.values()]
    assert sum(len(t) for t in tests) == len(set().union(*tests))  # unique across folds
    n_classes = labels.max() + 1
    for jobs in folds_.values():
        counts = np.bincount(labels[list(jobs[0].test_idx)], minlength=n_classes)
        assert len(set(counts.tolist())) == 1  # exactly balanced
        assert 0 < counts.sum() <= 12
        for job in jobs:
            assert_disjoint(job)  # validation never overlaps the test set
            assert len(job.val_idx) == 6
        assert_nested_and_balanced(jobs, labels)
    seeds = {(j.fold, j.size): j.seed for j in plan}
    assert len(set(seeds.values())) == len(seeds)  # a new initialisation for every training


@FAST
@given(labels_arrays(), st.integers(0, 50))
def test_same_seed_same_plan_other_seed_other_plan(labels, seed):
    options = ProtocolOptions(folds=3, sizes=(2, 4), seed=seed)
    assert make_plan("all", labels, options) == make_plan("all", labels, options)
    other = make_plan("all", labels, ProtocolOptions(folds=3, sizes=(2, 4), seed=seed + 1))
    assert other != make_plan("all", labels, options)


@FAST
@given(labels_arrays(min_per_class=1, max_per_class=30), st.integers(0, 99))
def test_balanced_order_prefixes(labels, seed):
    order = balanced_order(np.arange(len(labels)), labels, np.random.default_rng(seed))
    assert sorted(order.tolist()) == list(range(len(labels)))
    totals = np.bincount(labels)
    for n in range(1, len(order) + 1):
        counts = np.bincount(labels[order[:n]], minlength=len(totals))
        open_ = counts < totals  # classes with images left
        assert counts.max() - counts[open_].min(initial=counts.max()) <= 1


def test_paper_all_idb2_shape():
    labels = np.repeat([0, 1], 130)
    plan = make_plan("all", labels, default_options("all"))
    assert len(plan) == 10 * 20
    job = next(j for j in plan if j.job_id == "f03-n120-s0")
    assert (len(job.test_idx), len(job.val_idx), job.size) == (26, 26, 120)
    assert np.bincount(labels[list(job.train_idx)]).tolist() == [60, 60]


def test_run_folds_keeps_the_first_folds_identical():
    labels = np.repeat([0, 1], 50)
    full = make_plan("all", labels, ProtocolOptions(sizes=(10, 20)))
    first = make_plan("all", labels, ProtocolOptions(sizes=(10, 20), run_folds=2))
    assert first == [j for j in full if j.fold < 2]


def test_named_folds_plan_exactly_those_folds_of_the_full_plan():
    # A sweep split over sessions: folds 5-9 alone must be the full plan's jobs of folds 5-9.
    labels = np.repeat([0, 1], 50)
    full = make_plan("all", labels, ProtocolOptions(sizes=(10, 20), replicates=2))
    named = ProtocolOptions(sizes=(10, 20), replicates=2, run_folds=(9, 5, 7))
    assert named.run_folds == (5, 7, 9)
    assert make_plan("all", labels, named) == [j for j in full if j.fold in (5, 7, 9)]
    aml_labels = np.repeat([0, 1], 3200)  # room for 10 disjoint test sets of 600
    aml_full = make_plan("aml", aml_labels, default_options("aml"))
    aml_named = replace(default_options("aml"), run_folds=(3, 4))
    assert make_plan("aml", aml_labels, aml_named) == [j for j in aml_full if j.fold in (3, 4)]
    stored = ProtocolOptions.from_dict(named.to_dict())  # config.json holds a list
    assert stored == named


@pytest.mark.parametrize("folds", [(), (10,), (-1, 2)])
def test_named_folds_outside_the_partition_are_refused(folds):
    with pytest.raises(LeukolearnError, match="folds to run must be from 0 to 9"):
        ProtocolOptions(run_folds=folds)


def test_too_large_size_is_an_error_or_capped():
    labels = np.repeat([0, 1], 30)  # 6 test + 6 val per fold -> 48 in the pool
    with pytest.raises(LeukolearnError, match="exceed the smallest fold's training pool"):
        make_plan("all", labels, ProtocolOptions(sizes=(10, 100)))
    with pytest.warns(UserWarning, match="capped"):
        plan = make_plan("all", labels, ProtocolOptions(sizes=(10, 100), cap_sizes=True))
    assert sorted({j.size for j in plan}) == [10, 48]


def test_all_refuses_a_test_size():
    with pytest.raises(LeukolearnError, match="every image exactly once"):
        make_plan("all", np.repeat([0, 1], 30), ProtocolOptions(test_size=10))


def test_aml_test_set_shrinks_on_small_data_and_errors_when_hopeless():
    labels = np.repeat([0, 1], [400, 2000])
    with pytest.warns(UserWarning, match="reduced from 600 to 80"):
        plan = make_plan("aml", labels, default_options("aml"))  # 400 // 10 folds = 40 per class
    assert {len(j.test_idx) for j in plan} == {80}
    with pytest.raises(LeukolearnError, match="too few"):
        make_plan("aml", np.repeat([0, 1], [15, 500]), default_options("aml"))


def test_keep_classes_drops_rare_ones_and_renumbers():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 7)
    cells = CellImages(np.zeros((16, 4, 4, 3), np.uint8), labels, ("a", "b", "c"),
                       tuple(str(i) for i in range(16)))
    kept, dropped = keep_classes(cells, 5)
    assert dropped == {"b": 3}
    assert kept.class_names == ("a", "c")
    assert kept.class_counts() == {"a": 6, "c": 7}
    assert keep_classes(cells, 0)[0] is cells
