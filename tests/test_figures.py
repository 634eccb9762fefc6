"""Figures: each builds from synthetic data, saves as PNG + SVG, and shows the right numbers."""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (only to check that no figure leaks into pyplot)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from leukolearn.report.figures import (  # noqa: E402
    auc_vs_size, confusion_matrix_percent, loss_curves, mean_roc)
from leukolearn.report.paper_values import paper_reference  # noqa: E402
from leukolearn.report.style import save_figure  # noqa: E402


def _history(n_epochs=60, seed=0):
    rng = np.random.default_rng(seed)
    e = np.arange(1, n_epochs + 1)
    train = 0.7 * np.exp(-e / 15) + 0.05 + 0.01 * rng.standard_normal(n_epochs)
    val = 0.7 * np.exp(-e / 20) + 0.15 + 0.0005 * (e - 35) ** 2 / 10
    return [dict(epoch=int(a), train_loss=float(b), val_loss=float(c))
            for a, b, c in zip(e, train, val)]


def _folds(n_folds=10, seed=1):
    rng = np.random.default_rng(seed)
    folds = []
    for _ in range(n_folds):
        y = np.r_[np.zeros(12, int), np.ones(13, int)]
        p = 1 / (1 + np.exp(-(2.5 * (y - 0.5) + 0.9 * rng.standard_normal(25))))
        folds.append((y, p))
    return folds


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend()
            for t in ax.get_legend().get_texts()]


def _all_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def _check_saved(fig, tmp_path, stem):
    paths = save_figure(fig, tmp_path / "figs", stem)
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    png = next(p for p in paths if p.suffix == ".png")
    with Image.open(png) as im:
        assert im.width > 300 and im.height > 200
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert pixels.std() > 10, "PNG looks blank"
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg


def test_loss_curves_marks_lowest_val_loss_and_saves(tmp_path):
    hist = _history()
    best = min(hist, key=lambda h: h["val_loss"])["epoch"]
    fig = loss_curves(hist[::-1], fold=3, train_size=200)  # order of entries does not matter
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "Fold 3, n = 200 training images"
    assert any(f"epoch {best}" in t for t in _legend_texts(fig))
    _check_saved(fig, tmp_path, "loss")


def test_loss_curves_rejects_bad_history():
    with pytest.raises(ValueError):
        loss_curves([])
    with pytest.raises(ValueError, match="val_loss"):
        loss_curves([dict(epoch=1, train_loss=0.5)])


def test_mean_roc_legend_has_sklearn_mean_auc(tmp_path):
    folds = _folds()
    aucs = [roc_auc_score(y, p) for y, p in folds]
    fig = mean_roc(folds)
    text = "\n".join(_legend_texts(fig))
    assert f"AUC = {np.mean(aucs):.2f} ± {np.std(aucs, ddof=1):.2f}" in text
    assert "n = 10 folds" in text
    _check_saved(fig, tmp_path, "roc")


def test_mean_roc_skips_single_class_fold_with_a_note():
    folds = _folds(5)
    rng = np.random.default_rng(2)
    folds.insert(2, (np.ones(25, int), rng.random(25)))  # only positives: no ROC
    good_aucs = [roc_auc_score(y, p) for y, p in folds if len(np.unique(y)) == 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipping must not go through sklearn's warning path
        fig = mean_roc(folds)
    text = "\n".join(_legend_texts(fig))
    assert f"AUC = {np.mean(good_aucs):.2f}" in text
    assert "n = 5 folds" in text
    assert "1 fold skipped" in text


def test_mean_roc_with_no_usable_fold_does_not_crash():
    fig = mean_roc([(np.zeros(10, int), np.linspace(0, 1, 10))])
    assert "1 fold skipped" in "\n".join(_legend_texts(fig))


def test_auc_vs_size_one_box_per_size_nan_counted_and_paper_drawn(tmp_path):
    rng = np.random.default_rng(3)
    sizes = list(range(10, 201, 10))
    values = [np.clip(0.97 - 0.4 * np.exp(-s / 15) + 0.03 * rng.standard_normal(10), 0, 1)
              for s in sizes]
    values[0][[1, 4]] = np.nan
    values[5][:] = np.nan  # a size where no run gave a score
    fig = auc_vs_size(sizes, values, paper=paper_reference("all-idb2", "binary"),
                      chance_level=0.5)
    ax = fig.axes[0]
    boxes = [a for a in ax.get_children() if (a.get_gid() or "").startswith("box-")]
    assert [b.get_gid() for b in boxes] == [f"box-{s}" for s in sizes]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in sizes]
    texts = _all_texts(fig)
    assert "NaN runs:" in texts and "2" in texts and "10" in texts
    assert any("Schouten et al. 2021" in t for t in _legend_texts(fig))
    _check_saved(fig, tmp_path, "box")


def test_auc_vs_size_without_paper_has_no_paper_entry():
    fig = auc_vs_size([10, 20], [np.full(10, 0.8), np.linspace(0.7, 0.9, 10)],
                      metric_name="weighted F1", degenerate=[1, 0])
    assert not any("Schouten" in t for t in _legend_texts(fig))
    assert fig.axes[0].get_ylabel() == "weighted F1"
    assert "degenerate:" in _all_texts(fig)
    with pytest.raises(ValueError):
        auc_vs_size([10, 20], [np.ones(3)])


def test_confusion_matrix_percent_rows_and_counts(tmp_path):
    names = ["Lymphoblast", "Typical lymphocyte", "Atypical lymphocyte", "Neutrophil",
             "Monocyte", "Eosinophil"]
    counts = np.array([[100, 10, 5, 3, 1, 1], [8, 60, 6, 1, 0, 0], [3, 3, 6, 0, 0, 0],
                       [0, 1, 0, 30, 1, 2], [0, 0, 0, 1, 4, 0], [0, 0, 0, 0, 0, 0]])
    fig = confusion_matrix_percent(counts, names)
    texts = _all_texts(fig)
    assert "50" in texts  # atypical lymphocytes: 6 of 12 right
    for total in ("120", "75", "12", "34", "5"):  # images per true class, on the right
        assert total in texts
    assert texts.count("–") == 6  # a class without images has no percentages
    _check_saved(fig, tmp_path, "cm")
    with pytest.raises(ValueError):
        confusion_matrix_percent(counts, names[:3])


def test_no_figure_leaks_into_pyplot():
    before = plt.get_fignums()
    loss_curves(_history())
    mean_roc(_folds(3))
    auc_vs_size([10], [np.array([0.7, 0.8, np.nan])])
    confusion_matrix_percent(np.eye(2, dtype=int) * 5, ["a", "b"])
    assert plt.get_fignums() == before


def test_save_figure_rejects_paths_as_stem(tmp_path):
    with pytest.raises(ValueError):
        save_figure(loss_curves(_history()), tmp_path, "sub/name")


def test_paper_reference_values():
    assert paper_reference("all-idb2", "binary") == {200: (0.97, 0.02)}
    assert paper_reference("ALL_IDB2", "multiclass") == {200: (0.81, 0.09)}
    assert paper_reference("aml-lmu", "binary") == {50: (0.91, 0.04), 200: (0.93, 0.02)}
    assert paper_reference("aml-lmu", "multiclass") is None
    assert paper_reference("other", "binary") is None
    ref = paper_reference("all-idb2", "binary")
    ref[10] = (0.5, 0.1)  # a fresh dict: changing it changes nothing stored
    assert paper_reference("all-idb2", "binary") == {200: (0.97, 0.02)}


def test_mean_roc_skips_fold_with_nan_scores():
    folds = _folds(3)
    folds.append((folds[0][0], np.full(25, np.nan)))
    text = "\n".join(_legend_texts(mean_roc(folds)))
    assert "n = 3 folds" in text and "1 fold skipped (NaN scores)" in text
