"""The command line as a user meets it: exit codes, one-line errors, written outputs."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from leukolearn.data.synthetic import make_binary, write_image_folder
from helpers import run_cli as run




@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    write_image_folder(make_binary(12, size=190, seed=1), root)
    return root


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in err


def test_help_lists_commands(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for command in ("datasets", "inspect", "train", "predict", "demo"):
        assert command in out


def test_datasets_json_lists_every_layout(capsys):
    code, out, _ = run(["datasets", "--json"], capsys)
    assert code == 0
    assert {"all-idb2", "aml-lmu", "folder", "manifest"} <= set(json.loads(out))


def test_unknown_dataset_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run(["inspect", "no-such-layout", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "no-such-layout")


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run(["train", "folder", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, str(tmp_path))


def test_corrupt_image_names_the_file(tmp_path, capsys):
    root = tmp_path / "data"
    write_image_folder(make_binary(4, size=190, seed=1), root)
    bad = root / "blast" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    code, _, err = run(["train", "folder", str(root), "--positive", "blast",
                        "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "broken.png")
    # inspect lists it instead of stopping
    code, out, _ = run(["inspect", "folder", str(root), "--json"], capsys)
    assert code == 1  # it found a bad file (exit 2 is for errors)
    report = json.loads(out)
    assert any("broken.png" in item["path"] for item in report["bad_files"])


def test_text_file_posing_as_image_names_the_file(tmp_path, capsys):
    root = tmp_path / "data"
    write_image_folder(make_binary(4, size=190, seed=1), root)
    (root / "other" / "notes.tif").write_text("not an image")
    code, _, err = run(["train", "folder", str(root), "--positive", "blast",
                        "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "notes.tif")


def test_class_with_too_few_images_is_refused(tmp_path, capsys):
    root = tmp_path / "data"
    cells = make_binary(6, size=190, seed=2)
    write_image_folder(cells, root)
    for extra in sorted((root / "blast").iterdir())[2:]:
        extra.unlink()
    code, _, err = run(["train", "folder", str(root), "--positive", "blast", "--size", "190",
                        "--train-size", "4", "--val-size", "2", "--test-size", "2",
                        "--out", str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "blast")


def test_train_then_predict_writes_outputs(image_folder, tmp_path, capsys):
    out = tmp_path / "model"
    code, stdout, err = run(["train", "folder", str(image_folder), "--positive", "blast",
                             "--size", "190", "--train-size", "12", "--val-size", "6",
                             "--test-size", "6", "--max-epochs", "2", "--json",
                             "--out", str(out)], capsys)
    assert code == 0, err
    metrics = json.loads(stdout)
    assert 0 <= metrics["roc_auc"] <= 1 and metrics["epochs_run"] == 2
    # exactly these: every file is written beside itself and renamed, no temporary one stays
    assert sorted(p.name for p in out.iterdir()) == [
        "history.json", "metrics.json", "model.safetensors", "split.json", "train_config.json"]
    assert json.loads((out / "metrics.json").read_text()) == metrics  # --json prints the file
    pred_dir = tmp_path / "pred"
    code, _, err = run(["predict", str(out / "model.safetensors"), str(image_folder / "blast"),
                        "--out", str(pred_dir)], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((pred_dir / "cells.csv").open()))
    assert len(rows) == 12
    for row in rows:
        assert float(row["p_other"]) + float(row["p_blast"]) == pytest.approx(1, abs=1e-5)


def test_predict_on_a_truncated_model_is_a_one_line_error(tmp_path, capsys):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    img = tmp_path / "cell.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    code, _, err = run(["predict", str(model), str(img), "--out", str(tmp_path / "pred")], capsys)
    assert_one_line_error(code, err, "model.safetensors")


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    code, out, err = run(["demo", "--out", str(tmp_path / "demo"), "--per-class", "10",
                          "--max-epochs", "2", "--patience", "2"], capsys)
    assert code == 0, err
    assert (tmp_path / "demo" / "model" / "model.safetensors").is_file()
    samples = list(csv.DictReader((tmp_path / "demo" / "predictions" / "samples.csv").open()))
    assert [s["sample"] for s in samples] == ["patient_A", "patient_B", "patient_C"]
    assert all(int(s["n_cells"]) == 40 for s in samples)
    assert "true 60%" in out


def _defaults(command):
    import typer

    from leukolearn.cli import app

    params = typer.main.get_command(app).commands[command].params
    return {p.name: p.default for p in params}


def test_cli_defaults_are_those_of_the_config_classes():
    """One default per setting: what a command does without an option is what the Python
    API does without the argument (and what --help shows)."""
    import dataclasses
    import inspect

    from leukolearn.analysis.curves import plan_annotation
    from leukolearn.demo import run_demo
    from leukolearn.experiments.single import SplitSizes
    from leukolearn.model.onnx import export_onnx
    from leukolearn.predict.predictor import PredictOptions
    from leukolearn.training.config import TrainConfig

    train = _defaults("train")
    config = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for option in ("max_epochs", "patience", "init", "restarts", "device"):
        assert train[option] == config[option], option
    assert train["no_augment"] is not config["augment"]
    split = SplitSizes()
    assert (train["train_size"], train["val_size"], train["test_size"]) == (
        split.train, split.val, split.test)
    predict, options = _defaults("predict"), PredictOptions()
    assert predict["diagnostic_threshold"] == options.diagnostic_threshold
    assert predict["confidence"] == options.confidence
    assert predict["skip_bad"] is options.skip_bad and predict["raw_count"] is options.raw_count

    def keyword_defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()}

    plan, fit = _defaults("plan"), keyword_defaults(plan_annotation)
    assert all(plan[k] == fit[k] for k in ("n_boot", "seed", "confidence"))
    demo, demo_fn = _defaults("demo"), keyword_defaults(run_demo)
    assert all(demo[k] == demo_fn[k] for k in ("per_class", "seed", "max_epochs", "patience"))
    assert _defaults("export")["opset"] == keyword_defaults(export_onnx)["opset"]


def test_cli_defaults_of_running_reporting_and_explaining_are_the_package_ones():
    """The defaults the CLI reads from torch-free modules are those the functions it calls
    use, so a default is changed in one place."""
    import inspect

    from leukolearn.experiments.shortcut import run_shortcut
    from leukolearn.experiments.sweep import sweep_dataset
    from leukolearn.explain.lrp import lrp
    from leukolearn.explain.measures import explain_grid, focus_table
    from leukolearn.report.html import write_report

    def keyword_defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()}

    sweep, swept = _defaults("sweep"), keyword_defaults(sweep_dataset)
    assert (sweep["jobs"], sweep["batch_models"]) == (swept["jobs"], swept["batch_models"])
    assert _defaults("shortcut")["jobs"] == keyword_defaults(run_shortcut)["jobs"]
    rule = _defaults("explain")["rule"]
    assert rule == keyword_defaults(explain_grid)["rule"] == keyword_defaults(focus_table)["rule"]
    assert rule == keyword_defaults(lrp)["rule"]
    report, written = _defaults("report"), keyword_defaults(write_report)
    assert (report["target"], report["n_boot"]) == (written["target"], written["n_boot"])
    assert report["n_boot"] == _defaults("plan")["n_boot"]  # the report's interval is plan's


def test_the_cli_starts_without_torch():
    """`leukolearn --help` must not pay for torch (nor scipy, sklearn, matplotlib): every
    default the CLI shows comes from a module that does not import them."""
    import subprocess
    import sys

    code = ("import sys, leukolearn.cli; "
            "print(sorted(m for m in ('torch', 'scipy', 'sklearn', 'matplotlib') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["train", "sweep", "shortcut", "calibrate", "inspect"])
def test_allow_outside_root_is_an_option_of_every_command_that_loads_a_dataset(command):
    assert "allow_outside_root" in _defaults(command)
    assert _defaults(command)["allow_outside_root"] is False


def test_plan_refuses_a_percentage_with_the_fraction_to_give(tmp_path, capsys):
    code, _, err = run(["plan", str(tmp_path), "--target-auc", "0.9", "--confidence",
                        "95"], capsys)
    assert code == 2 and "give 0.95" in err


@pytest.mark.parametrize("command", ["evaluate", "predict", "report", "shortcut"])
def test_help_wraps_each_paragraph_to_the_terminal(command, capsys, monkeypatch):
    """A command's docstring is wrapped at the source's width; the help must not keep those
    line breaks (ragged in a narrow terminal): in a wide one each paragraph is one line."""
    import inspect

    from leukolearn.cli import app

    monkeypatch.setenv("COLUMNS", "400")
    callback = next(c.callback for c in app.registered_commands if c.callback.__name__ == command)
    paragraphs = [" ".join(p.split()) for p in inspect.getdoc(callback).split("\n\n")]
    assert len(paragraphs) > 1 and any("\n" in p for p in inspect.getdoc(callback).split("\n\n"))
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    for paragraph in paragraphs:
        assert paragraph[:300] in out  # a longer one wraps even at 400 columns
