"""Outputs that cannot be written, disks that fill, mistyped options: one line, no lost work.

Per command, three kinds of failure:

- an output that cannot be written (a file where a folder is needed or a folder where a
  file is, a path under a file, a folder one may not write): refused before any work, so
  the function the work starts with is replaced by one that fails the test if called;
- an option out of range: refused the same way, before anything is created;
- a disk that fills at one output file: the files written before it are kept whole.

Each gives exit code 2, exactly one stderr line `error: ...` naming the path (or option)
and the cause, no traceback, and leaves the folders as they were (compared file by file).
The tests run as root, for whom chmod does not stop a write: a folder one may not write is
simulated by files.py's `os.access`, and a full disk by its `os.replace` (the last step of
every `files.atomic_write`), each through a stand-in for files.py's `os` module only.
"""
from __future__ import annotations

import errno
import json
import os
import sqlite3
from pathlib import Path

import pytest

from leukolearn import files
from leukolearn.data.synthetic import make_binary, write_image_folder
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import load_model, save_model
from helpers import fill_fake_run, run_cli
from test_run_figures import FakeRunner


class FilesOS:
    """files.py's `os`: a full disk at the file named `full_at` (its rename fails, as a
    write that finds no space does), and `denied` folders (and below) not writable."""

    def __init__(self, full_at: str | None = None, denied: tuple[Path, ...] = ()):
        self.full_at, self.denied = full_at, denied

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        if Path(dst).name == self.full_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no filename, as write()'s
        return os.replace(src, dst)

    def access(self, path, mode, **kwargs):
        if any(Path(path) == d or d in Path(path).parents for d in self.denied):
            return False
        return os.access(path, mode, **kwargs)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) below root."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def one_error_line(code: int, err: str, *needles) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    write_image_folder(make_binary(6, size=190, seed=1), root)  # 6 blasts, 6 others
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(build_model(ModelConfig(input_size=190), seed=0), path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished fake sweep (no training): 3 folds, 3 sizes, enough for `plan`."""
    return fill_fake_run(tmp_path_factory.mktemp("run") / "run", FakeRunner(), n=60,
                         options=ProtocolOptions(folds=3, sizes=(6, 12, 18)))


def no_work(monkeypatch, target: str) -> None:
    """The function a command's work starts with now fails the test: a check that comes
    too late shows up as this AssertionError, which cli.main does not turn into a line."""
    def work(*_args, **_kwargs):
        raise AssertionError(f"{target} was called: the work started before the checks")

    monkeypatch.setattr(target, work)


SWEEP = ["--preset", "quick", "--folds", "3", "--size", "190", "--positive", "blast",
         "--max-epochs", "1", "--patience", "1", "--keep-duplicates", "--no-progress",
         "--run-folds", "1", "--sizes", "2", "--seed", "7"]  # one job of one epoch
TRAIN = ["--size", "190", "--train-size", "4", "--val-size", "4", "--test-size", "4",
         "--max-epochs", "1", "--json"]  # --json: no progress bars on stderr
LOAD = "leukolearn.data.dataset.load_dataset"
RELOAD = "leukolearn.explain.runs.reload_cells"
PREDICTOR = "leukolearn.predict.predictor.load_predictor"

# command -> (its arguments around the output path OUT, the function its work starts with,
# whether OUT is a folder ("dir") or a file ("file"); "file into dir": a folder holds it)
COMMANDS = {
    "train": (lambda c, m, r, o: ["train", "folder", c, "--positive", "blast", *TRAIN,
                                  "--out", o], LOAD, "dir"),
    "sweep": (lambda c, m, r, o: ["sweep", "folder", c, "--out", o, *SWEEP], LOAD, "dir"),
    "shortcut": (lambda c, m, r, o: ["shortcut", "folder", c, "--out", o, *SWEEP],
                 LOAD, "dir"),
    "predict": (lambda c, m, r, o: ["predict", m, c / "blast", "--out", o],
                "leukolearn.predict.predictor.predict_samples", "dir"),
    "calibrate": (lambda c, m, r, o: ["calibrate", m, "folder", c, "--positive", "blast",
                                      "--target-sensitivity", "0.9", "--part", "all",
                                      "--out", o], PREDICTOR, "file into dir"),
    "export": (lambda c, m, r, o: ["export", m, "--onnx", o], PREDICTOR, "file"),
    "report": (lambda c, m, r, o: ["report", r, "--out", o, "--n-boot", "5"],
               "leukolearn.report.html.render_report", "file into dir"),
    "figures": (lambda c, m, r, o: ["figures", r, "--out", o],
                "leukolearn.report.run_figures.make_run_figures", "dir"),
    "summary --csv": (lambda c, m, r, o: ["summary", r, "--csv", o],
                      "leukolearn.analysis.summary.summarize_store", "file"),
    "plan": (lambda c, m, r, o: ["plan", r, "--target", "0.9", "--n-boot", "20",
                                 "--figure-dir", o],  # 20: the default 1000 takes 10 s
             "leukolearn.analysis.curves.plan_from_store", "dir"),
    "explain": (lambda c, m, r, o: ["explain", r, "--out", o], RELOAD, "dir"),
    "embed": (lambda c, m, r, o: ["embed", r, "--out", o], RELOAD, "dir"),
    "focus": (lambda c, m, r, o: ["focus", r, "--out", o], RELOAD, "dir"),
    "demo": (lambda c, m, r, o: ["demo", "--out", o], "leukolearn.demo.run_demo", "dir"),
}
DEFAULT_NAME = {"calibrate": "model.safetensors", "report": "report.html"}


def wrong_kind(base: Path, command: str) -> tuple[Path, str]:
    """An output path of the wrong kind for `command`, made in base, and the words the
    refusal must contain."""
    kind = COMMANDS[command][2]
    if kind == "dir":  # a file where the folder goes
        (base / "taken").write_text("mine")
        # a sweep's --out is a run directory, and says so as RunStore does
        return base / "taken", ("is a file, not a run directory" if command == "sweep"
                                else "is a file, not a folder")
    if kind == "file":  # a folder where the file goes
        (base / "taken").mkdir()
        return base / "taken", "is a folder, not a file"
    # a folder is fine (the file goes into it), unless the file's name there is a folder
    (base / "taken" / DEFAULT_NAME[command]).mkdir(parents=True)
    return base / "taken", "is a folder, not a file"


@pytest.mark.parametrize("case", ["wrong kind", "under a file", "folder not writable"])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
        command, case, cells, model, run, tmp_path, monkeypatch, capsys):
    args, work, _ = COMMANDS[command]
    base = tmp_path / "outputs"
    base.mkdir()
    if case == "wrong kind":
        out, words = wrong_kind(base, command)
    elif case == "under a file":
        (base / "notes.txt").write_text("mine")
        out, words = base / "notes.txt" / "out", f"{base / 'notes.txt'} is a file, not a folder"
    else:
        (base / "locked").mkdir()
        monkeypatch.setattr(files, "os", FilesOS(denied=(base / "locked",)))
        out, words = base / "locked" / "out", f"{base / 'locked'} is a folder you may not write"
    no_work(monkeypatch, work)
    before = tree(base)
    code, _, err = run_cli(args(cells, model, run, out), capsys)
    one_error_line(code, err, out, words)
    assert tree(base) == before  # nothing created, nothing changed


@pytest.mark.parametrize("command, default", [("report", "report.html"),
                                              ("figures", "figures"), ("plan", "figures"),
                                              ("explain", "figures")])
def test_a_read_only_run_directory_names_the_default_output(command, default, run,
                                                            monkeypatch, capsys):
    monkeypatch.setattr(files, "os", FilesOS(denied=(run,)))
    extra = ["--target", "0.9"] if command == "plan" else []
    no_work(monkeypatch, {"report": "leukolearn.report.html.render_report",
                          "figures": "leukolearn.report.run_figures.make_run_figures",
                          "plan": "leukolearn.analysis.curves.plan_from_store",
                          "explain": RELOAD}[command])
    before = tree(run)
    code, _, err = run_cli([command, run, *extra], capsys)
    option = "--figure-dir" if command == "plan" else "--out"
    one_error_line(code, err, run / default, "may not write", f"give {option} to write elsewhere")
    assert tree(run) == before


BAD_OPTIONS = [  # (command, options that replace or add to its arguments, words)
    ("train", ["--init", "bogus"], "--init 'bogus'"),
    ("train", ["--device", "bogus"], "--device 'bogus'"),
    ("train", ["--restarts", "-1"], "restarts must be 0 or more"),
    ("train", ["--fold", "-1"], "--fold must be 0 or more"),
    ("sweep", ["--init", "bogus"], "--init 'bogus'"),
    ("sweep", ["--device", "bogus"], "--device 'bogus'"),
    ("sweep", ["--device", "cuda:99"], "--device cuda:99"),  # no GPU, or not 100 of them
    ("sweep", ["--batch-models", "0"], "--batch-models must be at least 1"),
    ("sweep", ["--batch-models", "2", "--jobs", "2"], "either --jobs"),
    ("sweep", ["--preset", "bogus"], "unknown preset 'bogus'"),
    ("sweep", ["--sizes", "ten"], "--sizes 'ten'"),
    ("shortcut", ["--jobs", "0"], "--jobs must be at least 1"),
    ("predict", ["--threshold", "1.5"], "--threshold must be a fraction in [0, 1]"),
    ("predict", ["--confidence", "95"], "for 95 % give 0.95"),
    ("predict", ["--target-sensitivity", "0"], "--target-sensitivity must be a fraction in (0, 1]"),
    ("calibrate", ["--target-sensitivity", "1.5"], "--target-sensitivity must be a fraction"),
    ("calibrate", ["--part", "bogus"], "--part 'bogus'"),
    ("export", ["--opset", "99"], "--opset 99"),
    ("report", ["--n-boot", "0"], "--n-boot must be at least 1"),
    ("report", ["--target", "0"], "--target must be a fraction in (0, 1]"),
    ("plan", ["--n-boot", "0"], "--n-boot must be at least 1"),
    ("plan", ["--confidence", "1"], "--confidence must be a fraction in (0, 1)"),
    ("explain", ["--rule", "bogus"], "unknown LRP rule 'bogus'"),
    ("explain", ["--fold", "-1"], "--fold must be 0 or more"),
    ("embed", ["--sizes", "ten"], "--sizes 'ten'"),
    ("demo", ["--per-class", "2"], "--per-class must be at least 5"),
    ("demo", ["--max-epochs", "0"], "max-epochs must be at least 1"),
]


@pytest.mark.parametrize("command, options, words", BAD_OPTIONS,
                         ids=[f"{c} {' '.join(o)}" for c, o, _ in BAD_OPTIONS])
def test_a_bad_option_is_refused_before_anything_is_created(command, options, words, cells,
                                                            model, run, tmp_path,
                                                            monkeypatch, capsys):
    args, work, _ = COMMANDS[command]
    no_work(monkeypatch, work)
    before = tree(tmp_path)
    code, _, err = run_cli([*args(cells, model, run, tmp_path / "out"), *options], capsys)
    one_error_line(code, err, words)
    assert tree(tmp_path) == before  # no output folder, no run directory


def test_a_corrected_sweep_is_not_refused_as_different_settings(cells, tmp_path, capsys):
    out = tmp_path / "run"
    for mistyped in (["--init", "bogus"], ["--device", "bogus"], ["--batch-models", "0"]):
        code, _, err = run_cli(["sweep", "folder", cells, "--out", out, *SWEEP, *mistyped],
                               capsys)
        one_error_line(code, err, mistyped[0])
        assert not out.exists()
    code, stdout, err = run_cli(["sweep", "folder", cells, "--out", out, *SWEEP, "--json"],
                                capsys)
    assert code == 0, err
    assert json.loads(stdout) == {**json.loads(stdout), "planned": 1, "done": 1, "failed": 0}


# command -> (output path below tmp_path, the file whose write finds the disk full, the
# files that must be there afterwards, as written before it)
DISK_FULL = {
    "train": ("model", "metrics.json", ["model.safetensors", "history.json"]),
    "predict": ("pred", "samples.csv", ["cells.csv"]),
    "export": ("m.onnx", "m.onnx", []),
    "calibrate": ("cal.safetensors", "cal.safetensors", []),
    "report": ("r.html", "r.html", []),
    "figures": ("figs", "fig4a_metric_vs_size.png",
                ["summary.csv", "fig3a_loss_curves.png", "fig3a_loss_curves.svg",
                 "fig3b_mean_roc.png", "fig3b_mean_roc.svg"]),
    "summary --csv": ("s.csv", "s.csv", []),
    "plan": ("figs", "learning_curve_plan.svg", ["learning_curve_plan.png"]),
}


@pytest.mark.parametrize("command", DISK_FULL)
@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_what_was_written(command, cells, model, run,
                                                            tmp_path, monkeypatch, capsys):
    args, _, kind = COMMANDS[command]
    name, full_at, kept = DISK_FULL[command]
    out = tmp_path / "outputs" / name
    (tmp_path / "outputs").mkdir()
    monkeypatch.setattr(files, "os", FilesOS(full_at=full_at))
    code, _, err = run_cli(args(cells, model, run, out), capsys)
    folder = out if kind == "dir" else out.parent
    one_error_line(code, err, folder / full_at, "No space left on device")
    assert not (folder / full_at).exists()
    written = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert written == sorted(kept)  # the earlier files, whole; no temporary file
    if command == "train":
        load_model(folder / "model.safetensors")  # the training is not lost


@pytest.mark.parametrize("error, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/x/s.csv"),
     "error: /x/s.csv: No space left on device; free some space and run the same command again"),
    (PermissionError(errno.EACCES, "Permission denied", "/x/run.sqlite"),
     "error: /x/run.sqlite: Permission denied"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),  # None: winerror
     "error: /a -> /b: Invalid cross-device link"),
    (sqlite3.OperationalError("disk I/O error"), "error: run database: disk I/O error"),
])
def test_an_unforeseen_os_or_sqlite_error_is_one_line(error, line, run, monkeypatch, capsys):
    """What the checks cannot foresee (the disk fills, a file vanishes, SQLite fails in a
    read) still ends in cli.main's one line, whichever command meets it."""
    def fail(*_args, **_kwargs):
        raise error

    monkeypatch.setattr("leukolearn.analysis.summary.summarize_store", fail)
    code, _, err = run_cli(["summary", run], capsys)
    assert one_error_line(code, err) == line


def test_version(capsys):
    from leukolearn import __version__

    code, stdout, _ = run_cli(["--version"], capsys)
    assert code == 0 and stdout.strip() == f"leukolearn {__version__}"


def test_export_and_calibrate_print_json(cells, model, tmp_path, capsys):
    code, stdout, err = run_cli(["export", model, "--onnx", tmp_path / "m.onnx", "--json"],
                                capsys)
    assert code == 0, err
    info = json.loads(stdout)
    assert info["class_names"] == ["other", "blast"] and info["max_difference"] < 1e-5
    assert Path(info["onnx"]).is_file()
    code, stdout, err = run_cli(["calibrate", model, "folder", cells, "--positive", "blast",
                                 "--target-sensitivity", "0.9", "--part", "all",
                                 "--out", tmp_path / "cal.safetensors", "--json"], capsys)
    assert code == 0, err
    info = json.loads(stdout)
    stored = load_model(info["model"]).config.extra
    assert info["threshold"]["threshold"] == stored["threshold"]
    assert info["threshold"]["sensitivity"] >= 0.9


def test_a_multiclass_sweep_says_which_classes_it_leaves_out(tmp_path, monkeypatch, capsys):
    from leukolearn.data.synthetic import make_cells
    from leukolearn.experiments.sweep import SweepReport

    write_image_folder(make_cells({"blast": 6, "lymphocyte": 6, "neutrophil": 2,
                                   "monocyte": 1}, size=190, seed=2), tmp_path / "data")
    seen = {}

    def sweep_dataset(cells, config, out, **_kwargs):  # the sweep itself is not the point
        seen["classes"] = cells.class_names
        return SweepReport(planned=0)

    monkeypatch.setattr("leukolearn.experiments.sweep.sweep_dataset", sweep_dataset)
    code, _, err = run_cli(["sweep", "folder", tmp_path / "data", "--preset",
                            "paper-multiclass", "--size", "190", "--keep-duplicates",
                            "--no-progress", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    left_out = [line for line in err.splitlines() if "left out" in line]
    assert left_out == [
        "class 'monocyte' left out: 1 image(s), fewer than the 5 a class needs in this sweep",
        "class 'neutrophil' left out: 2 image(s), fewer than the 5 a class needs in this sweep"]


# command -> (its arguments, given the cells, a trained run and OUT; the file whose write
# finds the disk full). What was written before it stays, whole; no temporary file is left.
DISK_FULL_TRAINED = {
    "explain": (lambda c, r, o: ["explain", r, "--out", o], "fig4b_explain_fold00_epsilon.svg"),
    "embed": (lambda c, r, o: ["embed", r, "--out", o], "separation_vs_size.svg"),
    "focus": (lambda c, r, o: ["focus", r, "--out", o], "focus_vs_size.svg"),
    "shortcut": (lambda c, r, o: ["shortcut", "folder", c, "--out", o, *SWEEP], "shortcut.csv"),
    "demo": (lambda c, r, o: ["demo", "--out", o, "--per-class", "10", "--max-epochs", "1"],
             "samples.csv"),
}


@pytest.mark.parametrize("command", [
    pytest.param(c, marks=pytest.mark.slow) if c in ("shortcut", "demo") else c  # they train
    for c in DISK_FULL_TRAINED])
def test_a_full_disk_in_the_commands_that_train_or_explain_is_one_line(
        command, cells, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    run = tmp_path / "run"
    code, _, err = run_cli(["sweep", "folder", cells, "--out", run, *SWEEP], capsys)
    assert code == 0, err
    args, full_at = DISK_FULL_TRAINED[command]
    monkeypatch.setattr(files, "os", FilesOS(full_at=full_at))
    code, _, err = run_cli(args(cells, run, out), capsys)
    # Their notes ("size 10 not in the run: ...") may come first; the error is one line, last.
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], err
    assert full_at in lines[-1] and "No space left on device" in lines[-1] and str(out) in lines[-1]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written, "nothing written before the full disk: the test checks nothing kept"
    assert not any(p.name == full_at for p in written)
    assert not any(p.name.startswith(".") and p.name.endswith(".tmp") for p in written)
