"""explain / embed / focus / shortcut on tiny run stores of synthetic cells at 190 px.

The stores hold real (untrained) networks, so every command runs end to end in seconds;
the shortcut behaviour test trains for real and is marked slow.
"""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from leukolearn.cli import main
from leukolearn.data.dataset import load_dataset
from leukolearn.data.synthetic import make_binary, write_image_folder
from leukolearn.errors import LeukolearnError
from leukolearn.explain.runs import default_rows, nearest_sizes, reload_cells, unseen_indices
from leukolearn.explain.measures import hidden_separation, separation_table
from leukolearn.experiments.variants import VARIANTS, shortcut_masks
from leukolearn.experiments.shortcut import run_shortcut, shortcut_summary
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.experiments.presets import SweepConfig
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.runstore.store import RunStore
from leukolearn.experiments.outcome import JobOutcome
from leukolearn.experiments.sweep import sweep_dataset
from leukolearn.training.config import TrainConfig
from leukolearn.training.loop import predict_proba

SIZE = 190  # the smallest input the paper's six blocks take
LOAD = {"size": SIZE, "positive": "blast", "multiclass": False, "label_table": None,
        "dedupe": True}


class UntrainedRunner:
    """A fresh network per job (seeded), no training: real weights in milliseconds."""

    def __call__(self, cells, job):
        model = build_model(ModelConfig(SIZE, cells.n_classes, cells.class_names), seed=job.seed)
        probs = predict_proba(model, cells.images[list(job.test_idx)])
        return JobOutcome(metric=0.5, best_epoch=1, epochs_run=1, seconds=0.0,
                          degenerate=False, test_probs=probs, history=[], model=model)


def tiny_config(sizes=(4, 8), folds=3, run_folds=2, epochs=1) -> SweepConfig:
    options = ProtocolOptions(folds=folds, sizes=sizes, run_folds=run_folds)
    return SweepConfig("all", options, TrainConfig.binary(max_epochs=epochs, patience=epochs,
                                                          augment=False), "auc")


def image_folder(root, n_per_class=12, signal="cell"):
    write_image_folder(make_binary(n_per_class, size=SIZE, signal=signal), root)
    return root


def fake_run(tmp, n_per_class=12):
    root = image_folder(tmp / "data", n_per_class)
    cells = load_dataset("folder", root, size=SIZE, positive=["blast"], progress=False)
    sweep_dataset(cells, tiny_config(), tmp / "run", dataset_name="folder", dataset_root=root,
                  load_options=LOAD, runner=UntrainedRunner(), progress=False)
    return tmp / "run", cells


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """3 folds of 8 test images, sizes 4 and 8, 2 folds run: 4 jobs."""
    return fake_run(tmp_path_factory.mktemp("inside"))[0]


def assert_sane_png(path, min_side=200):
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert min(image.shape) > min_side and image.std() > 10


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- glue


def test_reload_gives_the_run_cells_and_refuses_changed_or_missing_data(tmp_path):
    run_dir, cells = fake_run(tmp_path)
    with RunStore.open(run_dir) as store:
        again = reload_cells(store)
        assert again.fingerprint == cells.fingerprint and again.class_names == ("other", "blast")
        first = tmp_path / "data" / "blast" / "syn_blast_0000.png"
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(first)
        with pytest.raises(LeukolearnError, match="not those run"):
            reload_cells(store)
        shutil.rmtree(tmp_path / "data")
        with pytest.raises(LeukolearnError, match="gone"):
            reload_cells(store)


def test_nearest_sizes_rows_and_unseen_images(run):
    chosen, notes = nearest_sizes([10, 50, 100, 200, 210], [10, 40, 60, 190])
    assert chosen == [10, 40, 60, 190] and len(notes) == 4
    assert notes[0] == "size 50 not in the run: using the nearest, 40"
    labels = np.array([0, 1, 0, 1, 0, 0])
    assert default_rows([0, 1, 2, 3, 4], labels, ["other", "blast"] * 3,
                        ("other", "blast")) == [1, 0, 2]
    types = ["neutrophil", "blast", "lymphocyte", "blast", "monocyte", "x"]
    assert default_rows(range(6), labels, types, ("other", "blast")) == [1, 2, 0]
    with RunStore.open(run) as store:
        job = store.results()[0]
        train, val, test = store.split(job.job_id)
        unseen = unseen_indices(store, job.job_id, 24)
        assert len(unseen) == 24 - len(train) - len(val)
        assert set(test) <= set(unseen) and not set(unseen) & set(np.r_[train, val])


def test_a_dead_network_counts_as_no_separation():
    # one hidden vector for every image: scikit-learn's tSNE would crash on it (segfault)
    sep = hidden_separation(np.zeros((10, 32)), np.array([0] * 6 + [1] * 4))
    assert sep["dead"] == 1 and sep["silhouette"] == 0 and sep["knn_accuracy"] == 0.6
    assert hidden_separation(np.eye(4), np.array([0, 0, 1, 1]))["dead"] == 0


# --------------------------------------------------------------------------- commands


@pytest.mark.slow
def test_explain_writes_the_fig4b_grid(run, tmp_path, capsys):
    main(["explain", str(run), "--fold", "1", "--sizes", "4,8,100", "--out", str(tmp_path),
          "--no-progress"])
    err = capsys.readouterr().err
    assert "size 100 not in the run: using the nearest, 8" in err
    assert_sane_png(tmp_path / "fig4b_explain_fold01_epsilon.png")
    assert (tmp_path / "fig4b_explain_fold01_epsilon.svg").stat().st_size > 10_000

    with RunStore.open(run) as store:
        test = store.split(store.results()[0].job_id)[2]
        ids = reload_cells(store).image_ids
    train_image = next(i for i in range(24) if i not in set(test))
    main(["explain", str(run), "--sizes", "8", "--rule", "zplus", "--images",
          f"{ids[test[0]]},{ids[train_image]}", "--out", str(tmp_path), "--no-progress"])
    assert "is not a test image of fold 0" in capsys.readouterr().err
    assert_sane_png(tmp_path / "fig4b_explain_fold00_zplus.png")
    with pytest.raises(SystemExit):
        main(["explain", str(run), "--images", "nope", "--out", str(tmp_path)])
    assert "no image 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_embed_writes_tsne_panels_and_a_separation_row_per_job(run, tmp_path):
    main(["embed", str(run), "--sizes", "4,8", "--out", str(tmp_path), "--no-progress"])
    assert_sane_png(tmp_path / "fig5_tsne_fold00.png")
    assert_sane_png(tmp_path / "separation_vs_size.png")
    rows = read_csv(tmp_path / "separation.csv")
    with RunStore.open(run) as store:
        assert [r["job_id"] for r in rows] == [r.job_id for r in store.results()]
    for r in rows:
        assert -1 <= float(r["silhouette"]) <= 1 and 0 <= float(r["knn_accuracy"]) <= 1
        assert int(r["n_images"]) == 24 - 8 - int(r["size"])  # not trained or validated on
    with RunStore.open(run) as store:  # a second call measures nothing again
        table = separation_table(store, reload_cells(store), tmp_path / "separation.csv",
                                 progress=False)
    assert (table.measured, table.reused) == (0, 4) and table.rows == rows


@pytest.mark.slow
def test_focus_shares_per_job_sum_to_one(run, tmp_path, capsys):
    main(["focus", str(run), "--out", str(tmp_path), "--no-progress"])
    assert "stain segmentation" in capsys.readouterr().err
    assert_sane_png(tmp_path / "focus_vs_size.png")
    rows = read_csv(tmp_path / "focus_shares.csv")
    assert len(rows) == 4 and {r["masks"] for r in rows} == {"segmentation"}
    for r in rows:
        shares = [float(r[k]) for k in ("background", "cytoplasm", "nucleus")]
        assert np.isclose(sum(shares), 1.0) and min(shares) >= 0
        assert int(r["n_images"]) == 8 and r["rule"] == "epsilon"


# --------------------------------------------------------------------------- shortcut


@pytest.mark.slow
def test_shortcut_makes_three_resumable_runs_that_reload(tmp_path, capsys):
    root = image_folder(tmp_path / "data", 8)
    out = tmp_path / "sc"
    args = ["shortcut", "folder", str(root), "--out", str(out), "--positive", "blast",
            "--size", str(SIZE), "--preset", "quick", "--folds", "4", "--run-folds", "1",
            "--sizes", "4", "--max-epochs", "1", "--no-progress"]
    main(args)
    err = capsys.readouterr().err
    assert "stain segmentation" in err and "background-only" in err
    summary = json.loads((out / "shortcut.json").read_text())
    assert set(summary["variants"]) == set(VARIANTS)
    assert (out / "shortcut.csv").read_text().startswith("size,original_median")
    assert_sane_png(out / "shortcut_vs_size.png")
    assert_sane_png(out / "shortcut_examples.png")  # one image per class in each variant
    fingerprints = set()
    for name in VARIANTS:
        with RunStore.open(out / name) as store:
            assert store.dataset_info.load_options["variant"]["name"] == name
            assert len(store.results()) == 1
            fingerprints.add(reload_cells(store).fingerprint)  # pixels rebuilt exactly
    assert len(fingerprints) == 3
    main(args)  # resumes: nothing to train
    assert "(n=1)" in capsys.readouterr().err


def test_shortcut_refuses_to_resume_with_other_masks(tmp_path):
    cells = make_binary(6, size=SIZE)
    config = tiny_config(sizes=(2,), folds=3, run_folds=1)
    run_shortcut(cells, config, tmp_path, masks=shortcut_masks(cells), runner=UntrainedRunner(),
                 progress=False)
    plain = type(cells)(cells.images, cells.labels, cells.class_names, cells.image_ids)
    with pytest.raises(LeukolearnError, match="other shortcut settings"):
        run_shortcut(plain, config, tmp_path, masks=shortcut_masks(plain),
                     runner=UntrainedRunner(), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("signal, shows, hides", [("background", "background-only", "cell-only"),
                                                   ("cell", "cell-only", "background-only")])
def test_shortcut_control_finds_where_the_class_is(tmp_path, signal, shows, hides):
    cells = make_binary(40, size=SIZE, signal=signal, seed=3)
    config = tiny_config(sizes=(40,), folds=4, run_folds=1, epochs=20)
    run_shortcut(cells, config, tmp_path, masks=shortcut_masks(cells), progress=False)
    auc = {name: v["rows"][0]["median"]
           for name, v in shortcut_summary(tmp_path)["variants"].items()}
    print(signal, auc)
    assert auc[shows] >= 0.75 and auc[hides] <= 0.7 and auc[shows] - auc[hides] >= 0.2
