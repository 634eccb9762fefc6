"""Figures built from a store filled by a fake sweep (no training)."""
import numpy as np
import pytest
from PIL import Image

from leukolearn.cli import main
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.report.run_figures import make_run_figures
from leukolearn.experiments.outcome import JobOutcome
from helpers import fill_fake_run


class FakeRunner:
    """Probabilities that get better with the training size; a plausible loss history."""

    def __call__(self, cells, job):
        rng = np.random.default_rng(job.seed)
        labels = cells.labels[list(job.test_idx)]
        n_classes = cells.n_classes
        logits = rng.normal(size=(len(labels), n_classes))
        logits[np.arange(len(labels)), labels] += job.size / 4
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e + 0.01 * e,
                    "seconds": 0.1} for e in range(1, 12)]
        metric = float((probs.argmax(1) == labels).mean())
        return JobOutcome(metric=metric, best_epoch=3, epochs_run=11, seconds=0.0,
                          degenerate=False, test_probs=probs, history=history)


def fake_run(path, n_classes, metric):
    return fill_fake_run(path, FakeRunner(), n=60, n_classes=n_classes, metric=metric,
                         options=ProtocolOptions(folds=3, sizes=(6, 12, 18)))


def assert_sane_png(path):
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert image.shape[1] > 300 and image.shape[0] > 200
    assert image.std() > 10  # not blank


def test_binary_run_gives_loss_roc_and_size_figures(tmp_path):
    run = fake_run(tmp_path / "run", 2, "auc")
    written = make_run_figures(run)
    names = {p.name for p in written}
    for stem in ("fig3a_loss_curves", "fig3b_mean_roc", "fig4a_metric_vs_size"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
        assert_sane_png(run / "figures" / f"{stem}.png")
    assert "fig7b_confusion.png" not in names
    csv_lines = (run / "figures" / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3  # header + one line per size


def test_multiclass_run_gives_a_confusion_matrix(tmp_path):
    run = fake_run(tmp_path / "run", 3, "weighted_f1")
    written = make_run_figures(run, tmp_path / "figs")
    names = {p.name for p in written}
    assert "fig7b_confusion.png" in names and "fig3b_mean_roc.png" not in names
    assert_sane_png(tmp_path / "figs" / "fig7b_confusion.png")


def test_figures_command_on_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["figures", str(tmp_path / "nothing")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error:")


def test_paper_values_face_a_capped_size():
    from leukolearn.report.run_figures import _match_sizes

    assert _match_sizes({200: (0.97, 0.02)}, [10, 100, 197]) == {197: (0.97, 0.02)}
    assert _match_sizes({200: (0.97, 0.02)}, [10, 100]) == {}
    assert _match_sizes(None, [10]) is None


def test_metric_display_names_come_from_one_table():
    from leukolearn.analysis.metrics import metric_label

    assert metric_label("auc") == metric_label("auc", capital=False) == "ROC-AUC"
    assert metric_label("weighted_f1") == "Weighted F1"  # an axis, a figure's column
    assert metric_label("weighted_f1", capital=False) == "weighted F1"  # in a sentence
    assert metric_label("accuracy") == "accuracy"  # no display name: as it is


def test_learning_curve_axis_names_the_metric():
    from leukolearn.analysis.curves import plan_annotation
    from leukolearn.report.analysis_figures import learning_curve_figure

    sizes = np.array([10, 20, 40, 80, 160])
    values = 0.9 - 0.5 * sizes[:, None] ** -0.5 + np.zeros((1, 3))
    plan = plan_annotation(sizes, values, 0.85, metric_name="weighted_f1", n_boot=20)
    assert learning_curve_figure(plan).axes[0].get_ylabel() == "Test Weighted F1"
