"""Replicates scored as one ensemble (analysis.ensemble, the ensemble-* presets): the scores,
the summary and `compare` of such a run, its options, and the recipe's dead-network guard."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from helpers import fill_fake_run, run_cli
from leukolearn.analysis.ensemble import ensemble_id, scored_run
from leukolearn.analysis.summary import summarize_store
from leukolearn.errors import LeukolearnError
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.experiments.presets import get_preset
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.runstore.store import RunStore


class NoisyRunner:
    """Each network's probabilities: the truth plus its own noise (seeded by the job), so
    that the mean of several is better than most of them; `fail`: job ids that raise."""

    def __init__(self, fail=()):
        self.fail = set(fail)

    def __call__(self, cells, job):
        if job.job_id in self.fail:
            raise RuntimeError(f"cannot fit {job.job_id}")
        rng = np.random.default_rng(job.seed)
        labels = cells.labels[list(job.test_idx)]
        p = np.clip(0.5 + 0.15 * (labels - 0.5) + rng.normal(0, 0.3, len(labels)), 0.01, 0.99)
        probs = np.stack([1 - p, p], axis=1)
        return JobOutcome(metric=roc_auc_score(labels, p), best_epoch=1, epochs_run=4,
                          seconds=0.5, degenerate=False, test_probs=probs,
                          history=[{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e + 0.02 * e}
                                   for e in range(1, 5)],
                          restarts=int(job.replicate == 1))


ENSEMBLE_OPTIONS = ProtocolOptions(folds=4, sizes=(8, 12), replicates=3, ensemble=True)


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    return fill_fake_run(tmp_path_factory.mktemp("ens") / "run", NoisyRunner(), n=80,
                         options=ENSEMBLE_OPTIONS)


def test_each_fold_and_size_is_scored_by_the_mean_of_its_replicates(ensemble_run):
    with RunStore.open(ensemble_run) as store:
        networks = store.results()
        view = scored_run(store)
        records = view.results()
        assert len(networks) == 4 * 2 * 3 and len(records) == 4 * 2
        gains = []
        for record in records:
            members = [r for r in networks if (r.fold, r.size) == (record.fold, record.size)]
            preds = [store.predictions(r.job_id) for r in members]
            mean = np.mean([p.probs[:, 1] for p in preds], axis=0)
            assert record.job_id == ensemble_id(record.fold, record.size)
            assert record.metric == pytest.approx(roc_auc_score(preds[0].labels, mean), abs=1e-6)
            assert np.allclose(view.predictions(record.job_id).probs[:, 1], mean, atol=1e-6)
            assert record.epochs_run == 12 and record.seconds == pytest.approx(1.5)
            assert record.restarts == 1  # replicate 1 of each was "restarted" once
            gains.append(record.metric - np.mean([r.metric for r in members]))
        assert np.mean(gains) > 0  # averaging noisy networks helps: the point of it
        summary = summarize_store(store)
    assert summary.row(8).n_jobs == 4 and summary.row(8).n_folds == 4
    assert summary.row(8).mean == pytest.approx(np.mean([r.metric for r in records if r.size == 8]))
    assert summary.row(8).n_restarted == 4


def test_an_ensemble_with_a_failed_network_is_failed_and_an_unfinished_one_is_left_out(tmp_path):
    # Fold 0 at size 8: replicate 2 fails. The rest all finish.
    run = fill_fake_run(tmp_path / "run", NoisyRunner(fail={"f00-n8-s2"}), n=80,
                        options=ENSEMBLE_OPTIONS)
    with RunStore.open(run) as store:
        view = scored_run(store)
        failed = [r for r in view.results(include_failed=True) if r.status == "failed"]
        assert [r.job_id for r in failed] == [ensemble_id(0, 8)]
        assert len(view.results()) == 7
        assert summarize_store(store).row(8).n_failed == 1
    # As if fold 1's replicate 2 at size 12 were still training: its row not yet written.
    import sqlite3

    with sqlite3.connect(run / "run.sqlite") as conn:
        conn.execute("DELETE FROM jobs WHERE job_id = 'f01-n12-s2'")
    with RunStore.open(run) as store:
        ids = [r.job_id for r in scored_run(store).results(include_failed=True)]
    assert ensemble_id(1, 12) not in ids and len(ids) == 7


def test_a_run_of_replicates_resumes_with_or_without_ensemble_scoring(tmp_path):
    import dataclasses
    import json

    plain = dataclasses.replace(ENSEMBLE_OPTIONS, ensemble=False)
    run = fill_fake_run(tmp_path / "run", NoisyRunner(), n=80, options=plain)
    with RunStore.open(run) as store:
        assert len(scored_run(store).results()) == 24  # every network on its own
    fill_fake_run(run, NoisyRunner(), n=80, options=ENSEMBLE_OPTIONS)  # no job runs again
    assert json.loads((run / "config.json").read_text())["options"]["ensemble"] is True
    with RunStore.open(run) as store:
        assert len(scored_run(store).results()) == 8


def test_the_report_counts_ensembles_as_the_planned_jobs():
    from leukolearn.report.html_summary import planned_jobs

    options = {"folds": 4, "sizes": [8, 12], "replicates": 3}
    assert planned_jobs({"options": options}) == 24
    assert planned_jobs({"options": {**options, "ensemble": True}}) == 8
    assert planned_jobs({"options": {**options, "run_folds": [1, 3]}}) == 12  # those folds
    assert planned_jobs({"options": {**options, "run_folds": 3}}) == 18  # the first 3


def test_compare_pairs_an_ensemble_run_with_single_networks_by_fold_and_size(tmp_path, capsys,
                                                                          ensemble_run):
    single = fill_fake_run(tmp_path / "single", NoisyRunner(), n=80,
                           options=ProtocolOptions(folds=4, sizes=(8, 12)))
    code, out, err = run_cli(["compare", single, ensemble_run, "--labels", "single,ensemble",
                              "--paired", "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    rows = (tmp_path / "cmp" / "summary.csv").read_text().splitlines()
    ens = [r.split(",") for r in rows if r.startswith("ensemble,")]
    assert [int(r[3]) for r in ens] == [4, 4]  # n_jobs: one ensemble per fold and size


def test_an_ensemble_needs_two_replicates_and_the_paper_presets_have_none():
    with pytest.raises(LeukolearnError, match="at least 2 replicates"):
        ProtocolOptions(ensemble=True, replicates=1)
    for name, paper_name in (("ensemble-all-binary", "paper-all-binary"),
                             ("ensemble-aml-binary", "paper-aml-binary"),
                             ("ensemble-multiclass", "paper-multiclass")):
        recipe, paper = get_preset(name), get_preset(paper_name)
        assert recipe.options.ensemble and recipe.options.replicates >= 2 and recipe.train.restarts >= 1
        # the paper's protocol and settings but for the replicates and restarts
        assert recipe.with_options(replicates=1, ensemble=False).with_train(restarts=0) == paper
    for name in ("paper-all-binary", "paper-aml-binary", "paper-multiclass"):
        paper = get_preset(name)
        assert not paper.options.ensemble and paper.options.replicates == 1
        assert paper.train.restarts == 0


@pytest.mark.slow  # 12-20 short trainings
def test_the_recipe_returns_no_dead_network_where_the_paper_settings_do():
    # A learning rate 20x the paper's kills about a quarter of these tiny networks within a few
    # epochs (constant output): the paper's settings keep them, the recipe re-initialises.
    from leukolearn.data.synthetic import make_binary
    from leukolearn.training.loop import train_model

    cells = make_binary(10, size=190, seed=3)
    order = np.random.default_rng(0).permutation(len(cells))
    train, val = order[:10], order[10:20]
    dead = {}
    for name in ("paper-all-binary", "ensemble-all-binary"):
        config = get_preset(name).train
        config = type(config)(**{**config.to_dict(), "lr": 0.02, "max_epochs": 4, "patience": 4})
        dead[name] = [train_model(cells, train, val, config, seed=s).degenerate for s in range(8)]
    assert any(dead["paper-all-binary"])
    assert not any(dead["ensemble-all-binary"])


@pytest.mark.slow
def test_summary_and_report_of_an_ensemble_run(ensemble_run, capsys, tmp_path):
    code, out, err = run_cli(["summary", ensemble_run, "--json"], capsys)
    assert code == 0, err
    assert '"n_jobs": 4' in out
    code, out, err = run_cli(["report", ensemble_run, "--out", tmp_path / "report.html"], capsys)
    assert code == 0, err
    html = (tmp_path / "report.html").read_text()
    assert "Each job here is an ensemble of 3 networks" in html
