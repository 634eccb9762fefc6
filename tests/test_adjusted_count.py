"""The adjusted count: a sample's blast fraction corrected for the classifier's TPR and FPR
(Forman 2008; Rogan-Gladen), its interval, and the call made on it."""
import itertools
import math

import numpy as np
import pytest

from leukolearn.analysis.metrics import wilson_interval
from leukolearn.errors import LeukolearnError
from leukolearn.predict.counts import (ErrorRates, adjusted_count, adjusted_interval, check_fraction,
                                       rates_contradicted, summarize_sample)


def rates(tpr, fpr, n_positive=200, n_negative=200):
    return ErrorRates(tpr, fpr, n_positive, n_negative, "test")


def cells(k, n):
    return np.array([True] * k + [False] * (n - k))


# ---- the formula ---------------------------------------------------------------------------
def test_adjusted_count_on_known_numbers():
    # 20 % blasts: 0.9 * 0.2 + 0.1 * 0.8 = 0.26 of the cells are called blasts
    assert adjusted_count(0.26, 0.9, 0.1) == pytest.approx(0.2)
    assert adjusted_count(0.05, 0.9, 0.1) == 0.0  # fewer called than false positives: clipped
    assert adjusted_count(0.95, 0.9, 0.1) == 1.0  # more called than the TPR allows: clipped
    for q in (0.0, 0.13, 0.5, 1.0):  # a perfect classifier changes nothing
        assert adjusted_count(q, 1.0, 0.0) == pytest.approx(q)
    assert math.isnan(adjusted_count(0.3, 0.4, 0.4))  # no separation: undefined


def test_summarize_sample_with_rates():
    r = summarize_sample("s", cells(26, 100), 0.2, rates=rates(0.9, 0.1))
    assert r.blast_fraction == pytest.approx(0.26) and r.adjusted_fraction == pytest.approx(0.2)
    assert r.adjusted_ci_low <= 0.2 <= r.adjusted_ci_high and r.call_on == "adjusted"
    assert r.call == "uncertain"
    # raw 40 % of 400 is "above", but with FPR 0.35 / TPR 0.6 it is (0.4-0.35)/0.25 = 20 %
    raw = summarize_sample("s", cells(160, 400), 0.2)
    adj = summarize_sample("s", cells(160, 400), 0.2, rates=rates(0.6, 0.35, 5000, 5000))
    assert raw.call == "above" and raw.call_on == "raw" and math.isnan(raw.adjusted_fraction)
    assert adj.adjusted_fraction == pytest.approx(0.2) and adj.call == "uncertain"
    # few blasts, a classifier with many false positives: raw says above, adjusted below
    adj = summarize_sample("s", cells(120, 400), 0.2, rates=rates(0.9, 0.25, 5000, 5000))
    assert adj.blast_fraction == 0.3 and adj.adjusted_ci_high < 0.2 and adj.call == "below"
    assert not adj.above_threshold


def test_no_correction_when_the_classes_barely_separate():
    r = summarize_sample("s", cells(30, 100), 0.2, rates=rates(0.55, 0.46))  # TPR - FPR = 0.09
    assert math.isnan(r.adjusted_fraction) and math.isnan(r.adjusted_ci_low)
    assert r.call_on == "raw" and r.call == "above"
    assert r.to_dict()["adjusted_fraction"] is None


# ---- the interval --------------------------------------------------------------------------
@pytest.mark.parametrize("k", [15, 20, 55, 80, 85])
def test_interval_contains_the_point_and_widens_with_fewer_labelled_cells(k):
    """(At 15 of 100 called, below the FPR's 20 %, the lower end clips to 0 for all three:
    only the upper end widens. Fewer called, or more than 85, contradicts the rates with
    5000 labelled cells: see test_a_sample_that_contradicts_the_rates_has_no_adjusted_count.)"""
    widths = []
    for n_labelled in (5000, 200, 30):
        r = rates(0.8, 0.2, n_labelled, n_labelled)
        low, high = adjusted_interval(k, 100, r)
        p = adjusted_count(k / 100, r.tpr, r.fpr)
        assert 0 <= low <= p <= high <= 1
        widths.append((low, high))
    (lo_many, hi_many), (lo_mid, hi_mid), (lo_few, hi_few) = widths
    assert lo_few <= lo_mid <= lo_many and hi_many <= hi_mid <= hi_few
    if 20 <= k <= 80:
        assert hi_few - lo_few > hi_mid - lo_mid > hi_many - lo_many
    # with TPR and FPR known exactly the interval tends to the sample's Wilson interval, mapped
    q_low, q_high = wilson_interval(k, 100)
    exact = adjusted_interval(k, 100, rates(0.8, 0.2, 10**9, 10**9))
    mapped = [min(1, max(0, (q - 0.2) / 0.6)) for q in (q_low, q_high)]
    assert exact == pytest.approx(mapped, abs=1e-3)


def test_interval_corners_are_the_extremes_of_the_box():
    """Brute force over the box of the three Wilson intervals: no point of it gives a
    clipped adjusted count outside the interval from the two corners."""
    for k, tpr, fpr, n in [(10, 0.85, 0.15, 60), (50, 0.7, 0.3, 100), (95, 0.9, 0.1, 40),
                           (2, 0.95, 0.02, 200)]:
        r = rates(tpr, fpr, n, n)
        low, high = adjusted_interval(k, 100, r)
        grids = [np.linspace(*iv, 15) for iv in (wilson_interval(k, 100), r.tpr_interval(),
                                                 r.fpr_interval())]
        values = [adjusted_count(q, t, f) for q, t, f in itertools.product(*grids)]
        assert min(values) == pytest.approx(low) and max(values) == pytest.approx(high)


def test_interval_is_everything_when_tpr_and_fpr_may_coincide():
    r = rates(0.6, 0.4, 10, 10)  # TPR's interval reaches below FPR's
    assert r.tpr_interval()[0] < r.fpr_interval()[1]
    assert adjusted_interval(30, 100, r) == (0.0, 1.0)
    assert summarize_sample("s", cells(30, 100), 0.2, rates=r).call == "uncertain"


def test_a_sample_that_contradicts_the_rates_has_no_adjusted_count():
    """The tester's "0.0 (0-0)" beside a raw 46 %: 46 of 100 called, against FPR 0.62 and
    TPR 0.97 on 500 + 500 held-out cells. q's interval (36.6-55.7 %) lies wholly below
    FPR's (57.7-66.1 %): every corner of the box clipped to 0, a zero-width interval."""
    r = rates(0.97, 0.62, 500, 500)
    q_low, q_high = wilson_interval(46, 100)
    (tpr_low, tpr_high), (fpr_low, fpr_high) = r.tpr_interval(), r.fpr_interval()
    assert q_high == pytest.approx(0.5574, abs=1e-4) and fpr_low == pytest.approx(0.5767, abs=1e-4)
    assert r.usable and tpr_low > fpr_high  # usable rates: the old code clipped to (0, 0)
    assert (q_low - fpr_high) / (tpr_high - fpr_high) < 0 and (q_high - fpr_low) / (tpr_low - fpr_low) < 0
    assert all(math.isnan(v) for v in adjusted_interval(46, 100, r))
    s = summarize_sample("s", cells(46, 100), 0.2, rates=r)
    assert math.isnan(s.adjusted_fraction) and math.isnan(s.adjusted_ci_low)
    assert math.isnan(s.adjusted_ci_high) and s.call == "uncertain" and s.call_on == "adjusted"
    assert "below the false-positive rate 62.0%" in s.adjusted_note and "55.7%" in s.adjusted_note
    assert not s.above_threshold and s.to_dict()["adjusted_fraction"] is None
    # the raw count alone would have said "above": 46 % (37-56) against 20 %
    assert summarize_sample("s", cells(46, 100), 0.2).call == "above"
    # the mirror image: 98 of 100 called, more than TPR 0.8 (76-83 %) allows
    high = rates(0.8, 0.1, 500, 500)
    s = summarize_sample("s", cells(98, 100), 0.2, rates=high)
    assert math.isnan(s.adjusted_fraction) and s.call == "uncertain"
    assert "above the sensitivity 80.0%" in s.adjusted_note
    # two cells more and q's interval reaches FPR's: an interval again, (0, 0.04 %), which
    # the table prints rounded outwards as "0-1", never "0-0"
    assert rates_contradicted(47, 100, r) != "" and rates_contradicted(48, 100, r) == ""
    low, high = adjusted_interval(48, 100, r)
    assert low == 0.0 and 0 < high < 0.001
    assert summarize_sample("s", cells(48, 100), 0.2, rates=r).adjusted_note == ""
    from leukolearn.cli.use_cmds import _percent_with_interval

    assert _percent_with_interval(0.0, low, high) == "0.0 (0-1)"
    assert _percent_with_interval(0.426, 0.1, 0.7301) == "42.6 (10-74)"
    assert _percent_with_interval(math.nan, math.nan, math.nan) == "undefined"


def test_rates_from_tiny_validation_sets_give_the_whole_range_not_a_point():
    """TPR 1.0 on 3 blasts and FPR 0.0 on 3 other cells: their Wilson intervals (44-100 %,
    0-56 %) overlap, so the interval is all of (0, 1) and the call uncertain."""
    r = rates(1.0, 0.0, 3, 3)
    assert r.usable and r.tpr_interval()[0] < r.fpr_interval()[1]
    s = summarize_sample("s", cells(46, 100), 0.2, rates=r)
    assert s.adjusted_fraction == pytest.approx(0.46)  # a perfect classifier changes nothing
    assert (s.adjusted_ci_low, s.adjusted_ci_high) == (0.0, 1.0) and s.call == "uncertain"


@pytest.mark.parametrize("value, ok", [(0.95, True), (0.5, True), (0.0, False), (1.0, False),
                                       (95, False), (1.5, False), (-0.1, False),
                                       (math.nan, False)])
def test_confidence_must_be_a_fraction(value, ok):
    if ok:
        assert check_fraction("--confidence", value) == value
        return
    with pytest.raises(LeukolearnError, match="--confidence must be a fraction in \\(0, 1\\)"):
        check_fraction("--confidence", value)
    for bad in (lambda: summarize_sample("s", cells(5, 10), 0.2, confidence=value),
                lambda: adjusted_interval(5, 10, rates(0.9, 0.1), confidence=value)):
        with pytest.raises(LeukolearnError):
            bad()


def test_a_percentage_is_refused_with_the_fraction_to_give():
    with pytest.raises(LeukolearnError, match="for 95 % give 0.95"):
        check_fraction("--confidence", 95)
    with pytest.raises(LeukolearnError, match="for 20 % give 0.2"):
        check_fraction("--diagnostic-threshold", 20)
    with pytest.raises(LeukolearnError) as err:
        check_fraction("--confidence", 950)
    assert "give" not in str(err.value)  # not a percentage either
    assert check_fraction("--threshold", 0.0, zero=True, one=True) == 0.0
    assert check_fraction("--target-sensitivity", 1.0, one=True) == 1.0


# ---- a simulation --------------------------------------------------------------------------
@pytest.mark.slow
def test_simulation_adjusted_count_is_unbiased_where_the_raw_count_is_not():
    """Samples of 400 cells at 5, 20, 40 % blasts through a classifier with TPR 0.85 and FPR
    0.15 (binomial draws), its rates measured each time on 200 + 200 held-out cells."""
    rng = np.random.default_rng(7)
    tpr, fpr, n_cells, n_held_out, reps = 0.85, 0.15, 400, 200, 300
    raw_bias = {}
    for truth in (0.05, 0.20, 0.40):
        raw, adjusted, covered = [], [], 0
        for _ in range(reps):
            r = rates(rng.binomial(n_held_out, tpr) / n_held_out,
                      rng.binomial(n_held_out, fpr) / n_held_out, n_held_out, n_held_out)
            n_blasts = rng.binomial(n_cells, truth)
            called = rng.binomial(n_blasts, tpr) + rng.binomial(n_cells - n_blasts, fpr)
            s = summarize_sample("s", cells(called, n_cells), 0.2, rates=r)
            raw.append(s.blast_fraction)
            adjusted.append(s.adjusted_fraction)
            covered += s.adjusted_ci_low <= truth <= s.adjusted_ci_high
        expected_raw = tpr * truth + fpr * (1 - truth)  # 0.185, 0.29, 0.43
        assert np.mean(raw) == pytest.approx(expected_raw, abs=0.01)
        assert abs(np.mean(adjusted) - truth) < 0.05
        assert abs(np.mean(adjusted) - truth) < abs(np.mean(raw) - truth)
        assert covered / reps >= 0.95
        raw_bias[truth] = np.mean(raw) - truth
    # the raw count is pulled towards the classifier's balance: +13.5, +9, +3 points
    assert raw_bias[0.05] > 0.1 and raw_bias[0.20] > 0.05 and raw_bias[0.40] > 0.01


def test_error_rates_to_dict():
    d = rates(0.9, 0.1, 30, 40).to_dict()
    assert d["tpr"] == 0.9 and d["n_negative"] == 40 and d["separation"] == pytest.approx(0.8)
    assert d["source"] == "test"
