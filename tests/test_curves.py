"""Learning-curve fits and the annotation budget (`leukolearn plan`)."""
import dataclasses
import json
import math

import numpy as np
import pytest

from leukolearn.cli import main
from leukolearn.analysis.curves import (fit_inverse_power_law, inverse_power_law, metric_table, plan_annotation, plan_from_store)
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.runstore.store import RunStore
from leukolearn.experiments.outcome import JobOutcome
from helpers import fill_fake_run

SIZES = np.array([10, 20, 40, 60, 80, 100, 150, 200])
TRUE = (0.97, 0.6, 0.5)  # a, b, c: AUC 0.95 at n = (0.6 / 0.02)^2 = 900


def synthetic(folds=10, noise=0.01, seed=0, params=TRUE):
    rng = np.random.default_rng(seed)
    return inverse_power_law(SIZES, *params)[:, None] + rng.normal(0, noise, (len(SIZES), folds))


def test_fit_recovers_a_noiseless_curve_exactly():
    fit = fit_inverse_power_law(SIZES, inverse_power_law(SIZES, *TRUE))
    assert (fit.a, fit.b, fit.c) == pytest.approx(TRUE, abs=1e-4)
    assert fit.size_for(0.95) == pytest.approx(900, rel=1e-3)


def test_fit_recovers_a_noisy_curve_within_tolerance():
    fit = fit_inverse_power_law(SIZES, synthetic().mean(axis=1))
    assert fit.a == pytest.approx(TRUE[0], abs=0.02)
    assert fit.c == pytest.approx(TRUE[2], abs=0.2)
    grid = np.arange(10, 201)
    assert np.max(np.abs(fit(grid) - inverse_power_law(grid, *TRUE))) < 0.01


@pytest.mark.slow
def test_bootstrap_interval_contains_the_truth():
    plan = plan_annotation(SIZES, synthetic(seed=1), 0.95, n_boot=200, seed=0)
    assert not plan.plateau
    low, high = plan.n_ci
    assert low <= 900 <= high
    assert low <= plan.n_needed <= high
    assert plan.a_ci[0] <= TRUE[0] <= plan.a_ci[1]
    assert "training images" in plan.text()
    # seeded: the same seed gives the same interval
    assert plan_annotation(SIZES, synthetic(seed=1), 0.95, n_boot=200, seed=0).n_ci == plan.n_ci


def test_a_plateau_below_the_target_says_so():
    values = synthetic(params=(0.90, 0.5, 0.6), noise=0.005)
    plan = plan_annotation(SIZES, values, 0.95, n_boot=100)
    assert plan.plateau and math.isinf(plan.n_needed)
    assert plan.a_ci[1] < 0.95 and plan.p_plateau > 0.9
    assert "plateaus at 0.90" in plan.text()
    d = plan.to_dict()
    assert d["plateau"] is True and d["n_needed"] is None
    json.dumps(d)  # no NaN or inf in the JSON


def test_validation_fits_the_small_sizes_only_and_predicts_the_held_out_one():
    plan = plan_annotation(SIZES, synthetic(noise=0.005), 0.95, fit_max=100, validate_at=200,
                           n_boot=100)
    assert plan.fit_sizes.max() == 100
    v = plan.validation
    assert v.at == 200 and v.measured == pytest.approx(inverse_power_law(200, *TRUE), abs=0.005)
    assert abs(v.error) < 0.01
    with pytest.raises(LeukolearnError):
        plan_annotation(SIZES, synthetic(), 0.95, validate_at=123, n_boot=10)
    with pytest.raises(LeukolearnError):
        plan_annotation(SIZES[:2], synthetic()[:2], 0.95, n_boot=10)


class CurveRunner:
    """A fake sweep whose test AUC follows TRUE's curve plus fold noise; no models."""

    def __call__(self, cells, job):
        rng = np.random.default_rng(job.seed)
        auc = float(inverse_power_law(job.size, *TRUE) + rng.normal(0, 0.01))
        probs = np.full((len(job.test_idx), 2), 0.5)
        return JobOutcome(metric=auc, best_epoch=1, epochs_run=1, seconds=0.0, degenerate=False,
                          test_probs=probs, history=[])


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory):
    options = ProtocolOptions(folds=5, sizes=(10, 20, 40, 80, 160))
    path = fill_fake_run(tmp_path_factory.mktemp("plan") / "run", CurveRunner(), n=300,
                         options=options)
    return path


def test_metric_table_has_one_row_per_size_and_one_column_per_fold(curve_run):
    with RunStore.open(curve_run) as store:
        sizes, folds, values, name = metric_table(store.results())
    assert sizes.tolist() == [10, 20, 40, 80, 160] and len(folds) == 5
    assert values.shape == (5, 5) and name == "auc"
    plan = plan_from_store(curve_run, 0.95, n_boot=50)
    assert plan.fit.a == pytest.approx(TRUE[0], abs=0.03)


@pytest.mark.slow
def test_plan_command_end_to_end(curve_run, tmp_path, capsys):
    main(["plan", str(curve_run), "--target-auc", "0.95", "--n-boot", "100",
          "--figure-dir", str(tmp_path), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert d["target"] == 0.95 and d["plateau"] is False
    assert d["n_ci"][0] <= d["n_needed"] and len(d["fold_fits"]) == 5
    assert (tmp_path / "learning_curve_plan.png").stat().st_size > 10_000
    main(["plan", str(curve_run), "--target-auc", "0.95", "--n-boot", "100", "--fit-max", "80",
          "--validate-at", "160", "--figure-dir", str(tmp_path)])
    text = capsys.readouterr().out
    assert "validation: fitted on sizes <= 80" in text and "n = 160" in text


class DyingRunner(CurveRunner):
    """CurveRunner, but the network of fold 0 at size 80 dies (AUC 0.5, degenerate)."""

    def __call__(self, cells, job):
        outcome = super().__call__(cells, job)
        if (job.fold, job.size) == (0, 80):
            outcome = dataclasses.replace(outcome, metric=0.5, degenerate=True)
        return outcome


def test_without_dead_leaves_dead_networks_out_of_the_fit(tmp_path):
    options = ProtocolOptions(folds=5, sizes=(10, 20, 40, 80, 160))
    run = fill_fake_run(tmp_path / "run", DyingRunner(), n=300, options=options)
    with RunStore.open(run) as store:
        _, _, values, _ = metric_table(store.results())
        _, _, alive, _ = metric_table(store.results(), without_dead=True)
    assert values[3, 0] == 0.5 and np.isnan(alive[3, 0])
    assert np.array_equal(np.delete(values, 3, axis=0), np.delete(alive, 3, axis=0))
    assert np.nanmean(alive[3]) > np.mean(values[3]) + 0.05  # the dead one pulled the mean down
    assert plan_from_store(run, 0.95, n_boot=50, without_dead=True).fit.a == pytest.approx(TRUE[0], abs=0.03)


def test_plan_on_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(tmp_path / "nothing"), "--target-auc", "0.9"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error:")


def test_interval_bounds_are_sample_values_and_keep_inf():
    """The percentile interval picks bootstrap values (no interpolation): between 8 and an
    infinite n* (a plateau below the target) an interpolating quantile gives inf or NaN,
    between 2 and 3 a size that no refit needed."""
    from leukolearn.analysis.curves import _quantiles

    values = np.array([5.0, 1.0, math.inf, 4.0, 2.0, 3.0, math.inf, 6.0, 7.0, 8.0])
    assert _quantiles(values, 0.2) == (1.0, math.inf)  # the 1st and the 9th of 10
    assert _quantiles(values, 0.5) == (3.0, 8.0)  # the 3rd (ceil 2.5) and the 8th (ceil 7.5)
    assert _quantiles(values[np.isfinite(values)], 0.05) == (1.0, 8.0)
    assert all(math.isnan(v) for v in _quantiles(np.array([]), 0.05))
