"""`evaluate`: external validation metrics checked against scikit-learn / scipy on fixed
predictions, the class mapping, and the command end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score, recall_score, roc_auc_score

from helpers import run_cli
from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import ModelConfig, PaperCNN
from leukolearn.predict.evaluate import evaluate_probabilities
from leukolearn.predict.predictor import Predictor

SIZE = 190


def predictor(class_names, extra=None) -> Predictor:
    config = ModelConfig(input_size=SIZE, n_classes=len(class_names),
                         class_names=tuple(class_names), extra=extra or {})
    return Predictor([PaperCNN(config)], Path("model.safetensors"), "model")


def cells(labels, class_names) -> CellImages:
    labels = np.asarray(labels)
    return CellImages(np.zeros((len(labels), SIZE, SIZE, 3), np.uint8), labels,
                      tuple(class_names), tuple(f"c{i}" for i in range(len(labels))))


def binary_case(seed=0, n=300):
    """Cells of three types from another lab, a blast detector's fixed probabilities."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)  # 0 lymphocyte, 1 blast, 2 neutrophil
    p_blast = np.clip(rng.normal(0.3 + 0.4 * (labels == 1), 0.2), 0, 1)
    return labels, np.stack([1 - p_blast, p_blast], axis=1)


def test_binary_metrics_match_sklearn_and_scipy():
    labels, probs = binary_case()
    data = cells(labels, ("lymphocyte", "blast", "neutrophil"))
    ev = evaluate_probabilities(probs, predictor(("healthy", "blast")), data, threshold=0.5,
                                n_resamples=500)
    y = labels == 1
    assert ev.positive_model == ["blast"] and ev.positive_data == ["blast"]
    assert ev.auc == pytest.approx(roc_auc_score(y, probs[:, 1]), abs=1e-12)
    assert ev.auc_ci[0] < ev.auc < ev.auc_ci[1]
    called = probs[:, 1] >= 0.5
    assert ev.sensitivity.value == pytest.approx(recall_score(y, called))
    assert ev.specificity.value == pytest.approx(recall_score(~y, ~called))
    for k, name in enumerate(("lymphocyte", "blast", "neutrophil")):
        rate = ev.per_type[name]
        assert (rate.k, rate.n) == (int(called[labels == k].sum()), int((labels == k).sum()))
        ci = binomtest(rate.k, rate.n).proportion_ci(method="wilson")
        assert (rate.low, rate.high) == pytest.approx((ci.low, ci.high))
    assert ev.reliability is not None and ev.reliability.n == len(labels)


def test_bootstrap_interval_narrows_with_more_cells_and_is_seeded():
    small = evaluate_probabilities(*_flip(binary_case(n=60)), threshold=0.5, n_resamples=400)
    large = evaluate_probabilities(*_flip(binary_case(n=2000)), threshold=0.5, n_resamples=400)
    assert np.diff(large.auc_ci)[0] < np.diff(small.auc_ci)[0] / 2
    again = evaluate_probabilities(*_flip(binary_case(n=60)), threshold=0.5, n_resamples=400)
    assert again.auc_ci == small.auc_ci


def _flip(case):
    labels, probs = case
    return probs, predictor(("healthy", "blast")), cells(labels, ("lymphocyte", "blast", "neutrophil"))


def test_normal_cells_only_measure_false_positive_rates():
    """Another lab's normal cells: no class is the model's positive one."""
    labels, probs = binary_case()
    data = cells(labels, ("lymphocyte", "monocyte", "neutrophil"))
    ev = evaluate_probabilities(probs, predictor(("healthy", "blast")), data, threshold=0.5,
                                n_resamples=200)
    assert ev.positive_data == [] and np.isnan(ev.auc) and ev.sensitivity is None
    assert ev.specificity.n == len(labels)
    assert any("only false-positive rates" in n for n in ev.notes)
    assert sum(r.k for r in ev.per_type.values()) == int((probs[:, 1] >= 0.5).sum())


def test_positive_names_dataset_classes_and_unknown_ones_are_refused():
    labels, probs = binary_case()
    data = cells(labels, ("LYT", "MYO", "NGS"))
    model = predictor(("other", "blast"))
    ev = evaluate_probabilities(probs, model, data, layout="aml-lmu", threshold=0.5,
                                n_resamples=200)
    assert ev.positive_data == ["MYO"]  # the layout's blasts (MYO, MOB) that this copy has
    assert ev.auc == pytest.approx(roc_auc_score(labels == 1, probs[:, 1]))
    with pytest.raises(LeukolearnError, match="no such class in the dataset"):
        evaluate_probabilities(probs, model, data, positive=["MOB"], threshold=0.5)


def test_multiclass_weighted_f1_and_recall_match_sklearn():
    rng = np.random.default_rng(1)
    names = ("basophil", "ig", "lymphocyte", "neutrophil")
    labels = rng.integers(0, 5, 400)  # 4: a class the model does not know
    logits = rng.normal(size=(400, 4))
    known = labels < 4
    logits[known, labels[known]] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    data = cells(labels, (*names, "platelet"))
    ev = evaluate_probabilities(probs, predictor(names), data, n_resamples=300)
    pred = probs.argmax(axis=1)
    assert ev.weighted_f1 == pytest.approx(f1_score(labels[known], pred[known], average="weighted"))
    assert ev.weighted_f1_ci[0] < ev.weighted_f1 < ev.weighted_f1_ci[1]
    assert ev.not_in_model == {"platelet": int((~known).sum())}
    for i, name in enumerate(names):
        assert ev.recall[name].value == pytest.approx(recall_score(
            labels[known] == i, pred[known] == i))
    assert not ev.positive_model  # no binary view unless --positive names one
    with_ig = evaluate_probabilities(probs, predictor(names), data, positive=["ig"],
                                     threshold=0.5, n_resamples=200)
    assert with_ig.auc == pytest.approx(roc_auc_score(labels == 1, probs[:, 1]))


def test_evaluate_command_writes_its_files_and_refuses_without_out(tmp_path, capsys):
    from leukolearn.data.synthetic import make_binary, write_image_folder
    from leukolearn.model.weights import save_model

    root = tmp_path / "cells"
    write_image_folder(make_binary(6, size=SIZE, seed=2), root)
    model = tmp_path / "model.safetensors"
    save_model(predictor(("other", "blast")).models[0], model)
    code, _, err = run_cli(["evaluate", model, "folder", root], capsys)
    assert code == 2 and "give --out" in err
    missing = tmp_path / "no-model.safetensors"
    code, _, err = run_cli(["evaluate", missing, "folder", root], capsys)
    assert code == 2 and f"{missing}: no such model file" in err and "--out" not in err
    out = tmp_path / "eval"
    code, stdout, err = run_cli(["evaluate", model, "folder", root, "--out", out, "--json",
                                 "--resamples", "200", "--keep-duplicates"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["n_cells"] == 12 and report["positive_dataset_classes"] == ["blast"]
    assert json.loads((out / "evaluation.json").read_text()) == report
    assert {p.name for p in out.iterdir()} == {"evaluation.json", "cells.csv", "per_type.csv",
                                               "evaluation.png", "evaluation.svg"}
    assert len((out / "cells.csv").read_text().splitlines()) == 13


@pytest.mark.slow
def test_report_shows_every_evaluation_kept_in_the_run(tmp_path):
    from leukolearn.report.html_evaluations import evaluations_section

    run = tmp_path / "run"
    assert "No external validation yet" in evaluations_section(run).body
    labels, probs = binary_case()
    data = cells(labels, ("lymphocyte", "blast", "neutrophil"))
    for name in ("folder-lab_b", "folder-lab_c"):
        ev = evaluate_probabilities(probs, predictor(("healthy", "blast")), data, threshold=0.5,
                                    n_resamples=200)
        ev.write(run / "evaluations" / name)
    (run / "evaluations" / "not-an-evaluation").mkdir()
    section = evaluations_section(run)
    assert section.body.count("<tr><td>folder-lab_") == 2
    assert f"{ev.auc:.3f}" in section.body
    worst = max(("lymphocyte", "neutrophil"), key=lambda n: ev.per_type[n].value)
    assert f"{worst}: {ev.per_type[worst].value:.3f}" in section.body
    assert [f.source for f in section.figures] == [
        "evaluations/folder-lab_b/evaluation.png", "evaluations/folder-lab_c/evaluation.png"]
