"""`leukolearn sweep` and `summary` end to end on a tiny folder of PNGs (real, very short trainings)."""
import json

import numpy as np
import pytest
from PIL import Image

from leukolearn.cli.options import parse_sizes
from leukolearn.errors import LeukolearnError
from helpers import run_cli as run




@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    """20 'blast' (dark blob) and 20 'lymphocyte' (light blob) 48 px PNGs in class folders."""
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for cls, level in (("blast", 60), ("lymphocyte", 200)):
        (root / cls).mkdir()
        for i in range(20):
            img = rng.integers(180, 255, (48, 48, 3)).astype(np.uint8)
            r = rng.integers(10, 18)
            img[(yy - 24) ** 2 + (xx - 24) ** 2 < r * r] = level
            Image.fromarray(img).save(root / cls / f"{cls}{i:02d}.png")
    return root


TINY = ["--preset", "quick", "--folds", "4", "--run-folds", "2", "--sizes", "4,8",
        "--max-epochs", "2", "--patience", "1", "--size", "190", "--positive", "blast",
        "--keep-duplicates", "--no-progress"]


def test_sweep_then_summary_then_resume(png_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["sweep", "folder", str(png_folder), "--out", str(out), *TINY], capsys)
    assert code == 0, err
    assert "4 jobs done, 0 already" in err
    assert len(list((out / "weights").glob("*.safetensors"))) == 4

    code, stdout, err = run(["summary", str(out), "--json", "--csv", str(tmp_path / "s.csv")], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["metric"] == "auc"
    assert [(r["size"], r["n_jobs"], r["n_folds"]) for r in summary["rows"]] == [(4, 2, 2), (8, 2, 2)]
    assert all(0 <= r["mean"] <= 1 for r in summary["rows"] if r["mean"] is not None)
    assert (tmp_path / "s.csv").read_text().startswith("metric,size,")

    code, _, err = run(["sweep", "folder", str(png_folder), "--out", str(out), *TINY], capsys)
    assert code == 0 and "0 jobs done, 4 already" in err  # resuming a complete run trains nothing

    code, _, err = run(["sweep", "folder", str(png_folder), "--out", str(out), *TINY,
                        "--max-epochs", "3"], capsys)
    # This folder holds a near-duplicate pair under two labels: its warning may come first.
    errors = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error:")
    assert "train.max_epochs: 2 -> 3" in errors[0]

    code, stdout, _ = run(["summary", str(out)], capsys)
    assert code == 0 and "mean ± s.d." in stdout


def test_user_errors_are_one_line(png_folder, tmp_path, capsys):
    base = ["sweep", "folder", str(png_folder), "--size", "190", "--positive", "blast",
            "--no-progress", "--max-epochs", "1", "--folds", "4", "--run-folds", "1",
            "--keep-duplicates"]
    # The paper presets cap a size larger than the pool (ALL-IDB2 deduplicated leaves
    # 197 of the paper's 200) with a one-line warning.
    code, _, err = run([*base, "--out", str(tmp_path / "r1"), "--sizes", "4,30", "--preset",
                        "quick"], capsys)
    assert code == 0 and "warning: training sizes [30] capped to the training pool" in err
    code, _, err = run(["summary", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not a leukolearn run" in err
    code, _, err = run(["sweep", "folder", str(png_folder), "--out", str(tmp_path / "r2"),
                        "--preset", "nope"], capsys)
    assert code == 2 and "unknown preset" in err


def test_parse_sizes():
    assert parse_sizes("10:50:10") == (10, 20, 30, 40, 50)
    assert parse_sizes("5, 7") == (5, 7)
    assert parse_sizes(None) is None
    with pytest.raises(LeukolearnError):
        parse_sizes("ten")


@pytest.mark.slow
def test_batched_models_through_the_cli(png_folder, tmp_path, capsys):
    out = tmp_path / "batched"
    code, _, err = run(["sweep", "folder", str(png_folder), "--out", str(out), *TINY,
                        "--batch-models", "2"], capsys)
    assert code == 0, err
    code, stdout, _ = run(["summary", str(out), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["rows"]


def test_the_cli_records_the_load_options_python_records(png_folder, tmp_path, capsys):
    """One record of how a run's images were loaded: dataset.json of a CLI sweep holds the
    options `load_dataset` puts on `cells.source`, as a sweep from Python records them."""
    from leukolearn.data.dataset import load_dataset

    # Without --positive: the case where the CLI once wrote its own record (positive None,
    # multiclass false) beside the one load_dataset makes.
    tiny = [a for a in TINY if a not in ("--positive", "blast")]
    out = tmp_path / "run"
    code, _, err = run(["sweep", "folder", str(png_folder), "--out", str(out), *tiny], capsys)
    assert code == 0, err
    recorded = json.loads((out / "dataset.json").read_text())
    cells = load_dataset("folder", png_folder, size=190, dedupe=False, progress=False)
    assert recorded["load_options"] == cells.source.load_options
    assert recorded["root"] == cells.source.root and recorded["name"] == "folder"


def test_a_manifest_outside_its_folder_sweeps_with_the_option_and_reloads(png_folder, tmp_path,
                                                                           capsys):
    """--allow-outside-root reaches sweep, is recorded, and the run's images reload."""
    from leukolearn.explain.runs import reload_cells
    from leukolearn.runstore.store import RunStore

    manifest = tmp_path / "m" / "cells.csv"
    manifest.parent.mkdir()
    rows = [f"{p.resolve()},{p.parent.name}" for p in sorted(png_folder.rglob("*.png"))]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    code, _, err = run(["sweep", "manifest", str(manifest), "--out", str(out), *TINY], capsys)
    assert code == 2 and "--allow-outside-root" in err and not out.exists()
    code, _, err = run(["sweep", "manifest", str(manifest), "--out", str(out), *TINY,
                        "--allow-outside-root"], capsys)
    assert code == 0, err
    assert json.loads((out / "dataset.json").read_text())["load_options"][
        "allow_outside_root"] is True
    with RunStore.open(out) as store:
        assert len(reload_cells(store)) == store.dataset_info.n_images
