"""Reliability curve, ECE and the threshold for a target sensitivity."""
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from leukolearn.analysis.calibration import (ReliabilityCurve, choose_threshold, expected_calibration_error, reliability_curve)
from leukolearn.report.analysis_figures import reliability_diagram
from leukolearn.errors import LeukolearnError


def test_ece_by_hand():
    # bin [0.2, 0.3): two cells at 0.2 and 0.25, one positive -> mean 0.225, observed 0.5
    # bin [0.9, 1.0]: two cells at 0.9 and 1.0, both positive -> mean 0.95, observed 1.0
    y = [0, 1, 1, 1]
    p = [0.2, 0.25, 0.9, 1.0]
    curve = reliability_curve(y, p, n_bins=10)
    assert curve.counts.tolist() == [0, 0, 2, 0, 0, 0, 0, 0, 0, 2]
    assert curve.mean_predicted[2] == pytest.approx(0.225)
    assert curve.observed[9] == pytest.approx(1.0)
    assert math.isnan(curve.observed[0])
    assert curve.ece == pytest.approx(0.5 * 0.275 + 0.5 * 0.05)
    assert curve.mce == pytest.approx(0.275)
    assert curve.brier == pytest.approx(np.mean((np.array(p) - y) ** 2))
    again = ReliabilityCurve.from_dict(curve.to_dict())
    assert again.ece == pytest.approx(curve.ece) and again.counts.tolist() == curve.counts.tolist()


def test_calibrated_scores_have_small_ece_and_overconfident_ones_large():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    y = rng.uniform(0, 1, p.size) < p
    assert expected_calibration_error(y, p) < 0.02
    overconfident = np.where(p > 0.5, 1.0, 0.0)
    assert expected_calibration_error(y, overconfident) > 0.2


def test_threshold_is_the_most_specific_one_reaching_the_target():
    y = np.array([1] * 10 + [0] * 10)
    p = np.concatenate([np.linspace(0.95, 0.5, 10), np.linspace(0.6, 0.05, 10)])
    choice = choose_threshold(y, p, 0.9)
    # 9 of 10 positives must be called: the 9th highest positive score
    assert choice.threshold == pytest.approx(np.sort(p[:10])[::-1][8])
    assert choice.sensitivity == pytest.approx(0.9)
    assert choice.specificity == pytest.approx(np.mean(p[10:] < choice.threshold))
    assert choose_threshold(y, p, 1.0).sensitivity == 1.0
    assert choose_threshold(y, p, 1.0).threshold == pytest.approx(0.5)
    with pytest.raises(LeukolearnError):
        choose_threshold(np.zeros(5), np.linspace(0, 1, 5), 0.9)
    with pytest.raises(LeukolearnError):
        choose_threshold(y, p, 0.0)


def test_reliability_diagram_is_a_figure_without_pyplot_state():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 300)
    fig = reliability_diagram(reliability_curve(rng.uniform(0, 1, 300) < p, p), title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert plt.get_fignums() == before


def test_to_dict_is_strict_json_and_reads_back():
    import json

    empty = reliability_curve(np.array([], bool), np.array([]))
    d = empty.to_dict()
    assert d["n"] == 0 and d["ece"] is None and d["brier"] is None  # null, not a NaN token
    back = ReliabilityCurve.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back.n == 0 and math.isnan(back.brier) and np.isnan(back.observed).all()
    curve = reliability_curve(np.array([1, 0, 1, 1]), np.array([0.9, 0.2, 0.8, 0.85]), n_bins=5)
    back = ReliabilityCurve.from_dict(json.loads(json.dumps(curve.to_dict(), allow_nan=False)))
    assert back.ece == curve.ece and back.counts.tolist() == curve.counts.tolist()
    assert np.array_equal(back.observed, curve.observed, equal_nan=True)  # empty bins NaN again
    only_blasts = choose_threshold(np.array([1, 1]), np.array([0.7, 0.9]), 0.5).to_dict()
    assert only_blasts["specificity"] is None and only_blasts["n_negative"] == 0
