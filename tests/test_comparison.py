"""`compare`'s fold-by-fold view: method minus reference on the same folds."""
import math

import numpy as np
import pytest
from scipy import stats

from leukolearn.analysis.comparison import paired_differences
from leukolearn.runstore.store import JobRecord


def record(fold: int, size: int, metric: float, replicate: int = 0, status: str = "done") -> JobRecord:
    return JobRecord(job_id=f"f{fold}-n{size}-r{replicate}", fold=fold, size=size,
                     replicate=replicate, seed=0, status=status, metric_name="auc", metric=metric,
                     best_epoch=1, epochs_run=1, seconds=1.0, degenerate=False, error=None,
                     weights=None, finished_at="")


def test_differences_are_taken_fold_by_fold_on_the_folds_both_finished():
    ref = [record(f, 10, 0.5 + 0.04 * f) for f in range(6)] + [record(0, 30, 0.9)]
    # fold 5 failed in the method's run, fold 4's metric is undefined: both left out
    method = [record(f, 10, 0.6 + 0.04 * f + (0.02 if f == 1 else 0)) for f in range(4)]
    method += [record(4, 10, math.nan), record(5, 10, math.nan, status="failed")]
    [row] = paired_differences(ref, method, reference="paper", method="wide")
    diffs = np.array([0.1, 0.12, 0.1, 0.1])
    assert (row.size, row.n_folds, row.wins, row.ties, row.losses) == (10, 4, 4, 0, 0)
    assert row.mean_difference == pytest.approx(diffs.mean())
    half = stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2
    assert (row.ci_low, row.ci_high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert row.wilcoxon_p == pytest.approx(stats.wilcoxon(diffs).pvalue)


def test_replicates_enter_as_their_fold_mean_and_ties_are_counted():
    ref = [record(f, 10, 0.8) for f in range(3)]
    method = [record(f, 10, m, replicate=k) for f in range(3) for k, m in enumerate((0.7, 0.9))]
    [row] = paired_differences(ref, method, reference="a", method="b")
    assert (row.ties, row.mean_difference, row.wilcoxon_p) == (3, pytest.approx(0.0), 1.0)
    worse = [record(f, 10, 0.7 - 0.01 * f) for f in range(3)]
    [row] = paired_differences(ref, worse, reference="a", method="c")
    assert row.losses == 3 and row.ci_high < 0
