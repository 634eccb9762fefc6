"""Class names as the user gave them, through train, sweep, predict and their outputs; a
model that does not say which class is positive is refused; and models and runs made when
every binary task was ("other", "blast") load, resume and predict as before."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from leukolearn.cli import main
from leukolearn.data.synthetic import make_cells, write_image_folder
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import load_model, save_model
from helpers import run_cli as run

SIZE = 190  # the smallest input the six conv/pool blocks take


def one_line_error(code, err, *needles):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def constant_model(class_names, p1=0.7, seed=0):
    """An untrained network whose every cell gets probability `p1` for class 1."""
    model = build_model(ModelConfig(input_size=SIZE, class_names=class_names), seed=seed)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, math.log(p1 / (1 - p1))]))
    return model.eval()


@pytest.fixture(scope="module")
def ig_folder(tmp_path_factory):
    """Class folders ig (the synthetic blast look), lymphocyte, neutrophil: 8 cells each."""
    root = tmp_path_factory.mktemp("pbc")
    write_image_folder(make_cells(8, classes=("blast", "lymphocyte", "neutrophil"), size=SIZE,
                                  seed=3), root)
    (root / "blast").rename(root / "ig")
    return root


@pytest.fixture(scope="module")
def ig_model(ig_folder, tmp_path_factory):
    """`leukolearn train folder ROOT --positive ig`: one short training."""
    out = tmp_path_factory.mktemp("ig-model")
    main(["train", "folder", str(ig_folder), "--positive", "ig", "--size", str(SIZE),
          "--train-size", "12", "--val-size", "6", "--test-size", "6", "--max-epochs", "2",
          "--json", "--out", str(out)])
    return out


# ---- train -> predict --------------------------------------------------------------------------
@pytest.mark.slow
def test_train_with_positive_ig_makes_an_other_ig_model(ig_model):
    assert load_model(ig_model / "model.safetensors").config.class_names == ("other", "ig")
    assert json.loads((ig_model / "metrics.json").read_text())["class_names"] == ["other", "ig"]


def test_predict_names_ig_everywhere(ig_model, ig_folder, tmp_path, capsys):
    out = tmp_path / "pred"
    code, stdout, err = run(["predict", ig_model, ig_folder / "ig", "--out", out], capsys)
    assert code == 0, err
    assert "ig % per sample" in stdout and "blast" not in stdout.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["positive_classes"] == ["ig"] and summary["positive_name"] == "ig"
    assert summary["source"]["class_names"] == ["other", "ig"]
    cells = read_csv(out / "cells.csv")
    assert len(cells) == 8 and {c["predicted"] for c in cells} <= {"ig", "other"}
    for c in cells:  # the score column is the ig probability (the column keeps its name)
        assert c["blast_probability"] == c["p_ig"]
        assert c["predicted"] == ("ig" if float(c["p_ig"]) >= 0.5 else "other")
    # --positive ig names the class the model already counts: the same predictions
    again = tmp_path / "again"
    code, _, err = run(["predict", ig_model, ig_folder / "ig", "--positive", "ig", "--out", again],
                       capsys)
    assert code == 0, err
    assert read_csv(again / "cells.csv") == cells
    assert json.loads((again / "summary.json").read_text())["positive_name"] == "ig"
    # the class it does not have is refused, naming the ones it has
    code, _, err = run(["predict", ig_model, ig_folder / "ig", "--positive", "blast",
                        "--out", tmp_path / "no"], capsys)
    one_line_error(code, err, "'blast'", "other, ig")


def test_calibrate_an_ig_model_with_positive_ig(ig_model, ig_folder, tmp_path, capsys):
    calibrated = tmp_path / "cal.safetensors"
    code, stdout, err = run(["calibrate", ig_model, "folder", ig_folder, "--positive", "ig",
                             "--part", "all", "--target-sensitivity", "0.9", "--out", calibrated],
                            capsys)
    assert code == 0, err
    assert "8 ig cells" in stdout
    config = load_model(calibrated).config
    assert config.class_names == ("other", "ig") and config.extra["positive"] == ["ig"]
    assert config.extra["calibration"]["positive"] == ["ig"]


# ---- a model that does not say which class is positive ---------------------------------------
def test_a_two_class_model_without_a_positive_class_is_refused(ig_folder, tmp_path, capsys):
    """Trained without --positive on a folder of lymphocytes and neutrophils, a model has
    those two classes; class 1 used to be counted as the blasts."""
    from leukolearn.cli.options import load_cells

    two = tmp_path / "two"
    for name in ("lymphocyte", "neutrophil"):
        (two / name).mkdir(parents=True)
        for f in sorted((ig_folder / name).glob("*.png"))[:4]:
            (two / name / f.name).write_bytes(f.read_bytes())
    assert load_cells("folder", two, size=SIZE, progress=False).class_names == \
        ("lymphocyte", "neutrophil")  # what `train` builds its model from
    model = tmp_path / "m" / "model.safetensors"
    save_model(constant_model(("lymphocyte", "neutrophil")), model)
    out = tmp_path / "pred"
    code, _, err = run(["predict", model, two, "--out", out], capsys)
    one_line_error(code, err, "which class is positive", "lymphocyte, neutrophil",
                   "--positive CLASS")
    assert not (out / "samples.csv").exists()
    code, stdout, err = run(["predict", model, two, "--positive", "neutrophil", "--out", out],
                            capsys)
    assert code == 0, err
    assert "neutrophil % per sample" in stdout
    assert json.loads((out / "summary.json").read_text())["positive_classes"] == ["neutrophil"]
    # calibrate --positive on such a model keeps its classes, counts the one named and
    # records it: predict then needs no --positive
    calibrated = tmp_path / "cal.safetensors"
    code, _, err = run(["calibrate", model, "folder", two, "--positive", "neutrophil", "--part",
                        "all", "--target-sensitivity", "0.9", "--out", calibrated], capsys)
    assert code == 0, err
    assert load_model(calibrated).config.extra["positive"] == ["neutrophil"]
    code, _, err = run(["predict", calibrated, two, "--out", out], capsys)
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["positive_name"] == "neutrophil"


# ---- sweep, and a run begun when every binary task was ("other", "blast") -------------------
class ConstantRunner:
    """No training: a network named after the cells' classes, fixed test predictions."""

    def __call__(self, cells, job):
        from leukolearn.experiments.outcome import JobOutcome

        labels = cells.labels[list(job.test_idx)]
        p = 0.3 + 0.4 * labels
        return JobOutcome(metric=0.9, best_epoch=1, epochs_run=1, seconds=0.0, degenerate=False,
                          test_probs=np.stack([1 - p, p], axis=1), history=[],
                          model=constant_model(cells.class_names, seed=job.seed))


def _sweep(cells, out, **kw):
    from leukolearn.experiments.presets import SweepConfig, get_preset
    from leukolearn.experiments.protocol import ProtocolOptions
    from leukolearn.experiments.sweep import sweep_dataset

    config = SweepConfig("all", ProtocolOptions(folds=3, sizes=(6,)), get_preset("quick").train,
                         "auc")
    return sweep_dataset(cells, config, out, runner=ConstantRunner(), progress=False, **kw)


def test_a_sweep_with_positive_ig_records_ig(ig_folder, tmp_path, capsys):
    from leukolearn.cli.options import load_cells

    cells = load_cells("folder", ig_folder, size=SIZE, positive="ig", progress=False)
    assert cells.class_names == ("other", "ig") and cells.class_counts() == {"other": 16, "ig": 8}
    report = _sweep(cells, tmp_path / "run")
    assert report.done == 3
    assert json.loads((tmp_path / "run" / "dataset.json").read_text())["class_names"] == \
        ["other", "ig"]
    for weights in (tmp_path / "run" / "weights").iterdir():
        assert load_model(weights).config.class_names == ("other", "ig")
    out = tmp_path / "pred"
    code, stdout, err = run(["predict", tmp_path / "run", ig_folder / "ig", "--out", out], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["positive_name"] == "ig" and "ig cells" in stdout


def test_a_run_made_with_positive_before_resumes_and_predicts(ig_folder, tmp_path, capsys):
    """A run begun by the version before (its `--positive ig` made classes ("other",
    "blast")) resumes on the same images loaded now as ("other", "ig"): the fingerprint is
    what it was. Its models then name class 1 two ways; the run's record names them."""
    from leukolearn.cli.options import load_cells
    from leukolearn.data.dataset import load_dataset
    from leukolearn.predict.predictor import load_predictor

    now = load_cells("folder", ig_folder, size=SIZE, positive="ig", progress=False)
    # what the version before made of `--positive ig`: binary() named every task so
    full = load_dataset("folder", ig_folder, size=SIZE, progress=False)
    before = full.binary(["ig"], "blast")
    assert before.class_names == ("other", "blast")
    assert before.fingerprint == now.fingerprint
    assert (before.labels == now.labels).all()
    run_dir = tmp_path / "run"
    assert _sweep(before, run_dir, max_jobs=2).done == 2  # interrupted after two jobs
    resumed = _sweep(now, run_dir)
    assert (resumed.skipped, resumed.done, resumed.failed) == (2, 1, 0)
    names = sorted(load_model(w).config.class_names for w in (run_dir / "weights").iterdir())
    assert names == [("other", "blast"), ("other", "blast"), ("other", "ig")]
    assert json.loads((run_dir / "dataset.json").read_text())["class_names"] == ["other", "blast"]
    predictor = load_predictor(run_dir)
    assert predictor.class_names == ("other", "blast") and len(predictor.models) == 3
    out = tmp_path / "pred"
    code, _, err = run(["predict", run_dir, ig_folder / "ig", "--out", out], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["positive_classes"] == ["blast"] and summary["source"]["n_models"] == 3
    # another positive class is another dataset: refused, not resumed
    other = load_cells("folder", ig_folder, size=SIZE, positive="lymphocyte", progress=False)
    with pytest.raises(LeukolearnError, match="another dataset"):
        _sweep(other, run_dir)


def test_an_old_blast_model_predicts_as_before(ig_folder, tmp_path, capsys):
    """A model file from when every binary task was ("other", "blast"): "blast" is its
    positive class by name, with or without --positive blast."""
    model = tmp_path / "model.safetensors"
    save_model(constant_model(("other", "blast"), p1=0.8), model)
    for extra in ([], ["--positive", "blast"]):
        out = tmp_path / f"pred{len(extra)}"
        code, stdout, err = run(["predict", model, ig_folder / "ig", "--out", out, *extra], capsys)
        assert code == 0, err
        assert "blast % per sample" in stdout
        cells = read_csv(out / "cells.csv")
        assert all(c["predicted"] == "blast" and c["blast"] == "1" for c in cells)
        assert all(float(c["p_blast"]) == pytest.approx(0.8, abs=1e-5) for c in cells)


def test_an_old_blast_model_calibrates_with_the_positive_it_was_trained_with(ig_folder, tmp_path,
                                                                              capsys):
    """`calibrate --positive ig` now loads ("other", "ig"); a model trained with that
    option before has ("other", "blast"): the same task, so it is calibrated, not refused."""
    model = tmp_path / "model.safetensors"
    save_model(constant_model(("other", "blast"), p1=0.8), model)
    calibrated = tmp_path / "cal.safetensors"
    code, _, err = run(["calibrate", model, "folder", ig_folder, "--positive", "ig", "--part",
                        "all", "--target-sensitivity", "0.9", "--out", calibrated], capsys)
    assert code == 0, err
    config = load_model(calibrated).config
    assert config.class_names == ("other", "blast") and config.extra["positive"] == ["blast"]
    assert config.extra["calibration"]["threshold"]["n_positive"] == 8  # the ig cells
    # a binary model of another task is still refused
    save_model(constant_model(("other", "neutrophil")), tmp_path / "neu.safetensors")
    code, _, err = run(["calibrate", tmp_path / "neu.safetensors", "folder", ig_folder,
                        "--positive", "ig", "--part", "all", "--target-sensitivity", "0.9",
                        "--out", tmp_path / "no.safetensors"], capsys)
    one_line_error(code, err, "are not the model's")
