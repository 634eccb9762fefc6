"""`leukolearn predict`: per-cell calls, per-sample blast fractions, RUN ensembles, thresholds.

Models are untrained networks whose classifier weights are zeroed, so every cell gets the
softmax of the bias: a known blast probability without any training.
"""
import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from leukolearn.errors import LeukolearnError
from leukolearn.analysis.metrics import wilson_interval
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import save_model
from leukolearn.predict.counts import summarize_sample
from leukolearn.predict.predictor import load_predictor
from leukolearn.predict.samples import collect_samples
from leukolearn.experiments.protocol import ProtocolOptions
from leukolearn.runstore.store import RunStore
from leukolearn.experiments.outcome import JobOutcome
from helpers import fill_fake_run, run_cli as run

SIZE = 190  # the smallest input the six conv/pool blocks take


def constant_model(p_blast, seed=0):
    """A network that gives every image blast probability `p_blast`."""
    model = build_model(ModelConfig(input_size=SIZE), seed=seed)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, math.log(p_blast / (1 - p_blast))]))
    return model.eval()


def save_calibrated(path, sensitivity, specificity, n_positive, n_negative):
    """A constant (p 0.7) model as `calibrate` saves it: threshold 0.6, with the rates it
    measured there on n_positive + n_negative validation cells."""
    from dataclasses import replace

    from leukolearn.analysis.calibration import ThresholdChoice, reliability_curve
    from leukolearn.model.cnn import PaperCNN

    base = constant_model(0.7)
    choice = ThresholdChoice(0.6, 0.9, sensitivity, specificity, n_positive, n_negative, "val")
    curve = reliability_curve(np.array([0, 1]), np.array([0.2, 0.8])).to_dict()
    extra = {"threshold": 0.6, "calibration": {"positive": ["blast"], "source": "the val",
                                                "threshold": choice.to_dict(),
                                                "reliability": curve}}
    model = PaperCNN(replace(base.config, extra=extra))
    model.load_state_dict(base.state_dict())
    save_model(model, path)
    return path




def read_csv(path):
    return list(csv.DictReader(path.open()))


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    """patients/P1 (3 cells), patients/P2 (5 cells, two in a nested slide folder)."""
    root = tmp_path_factory.mktemp("patients")
    rng = np.random.default_rng(0)
    for name, n in (("P1", 3), ("P2", 5)):
        for i in range(n):
            folder = root / name / ("slide" if name == "P2" and i >= 3 else "")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"c{i}.png")
    return root


# ---- Wilson interval -----------------------------------------------------------------------
@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (20, 100, 0.1334, 0.2888),
    # Newcombe (1998), Stat Med 17:857, Table I, method 3 (Wilson score)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_published_values(k, n, low, high):
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=6e-5)


def test_wilson_edge_cases():
    # the bound at an observed 0 % or 100 % is exact, not a rounding away from it
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(0, 7)[1] > 0
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] < 1
    assert all(math.isnan(v) for v in wilson_interval(0, 0))  # a sample without cells
    for k, n in ((3, 2), (-1, 5), (1, 0)):
        with pytest.raises(ValueError):
            wilson_interval(k, n)


def test_wilson_confidence_is_passed_on():
    low90, high90 = wilson_interval(5, 10, 0.90)
    low95, high95 = wilson_interval(5, 10)
    low99, high99 = wilson_interval(5, 10, 0.99)
    assert low99 < low95 < low90 < 0.5 < high90 < high95 < high99
    # the score interval written out (Newcombe 1998, eq. 3) at the 99 % normal quantile
    z, p, n = 2.5758293035489004, 0.5, 10
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    expected = ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))
    assert (low99, high99) == pytest.approx(expected, abs=1e-12)


def test_sample_call_uses_the_whole_interval():
    assert summarize_sample("s", np.array([True] * 60 + [False] * 40), 0.2).call == "above"
    assert summarize_sample("s", np.zeros(200, bool), 0.2).call == "below"
    few = summarize_sample("s", np.zeros(5, bool), 0.2)  # 0/5: CI up to 43 %
    assert few.call == "uncertain" and not few.above_threshold and few.ci_high > 0.4


# ---- samples from folders ------------------------------------------------------------------
def test_folder_of_folders_gives_one_row_per_sample(patients, tmp_path, capsys):
    save_model(constant_model(0.7), tmp_path / "m" / "model.safetensors")
    out = tmp_path / "out"
    code, stdout, err = run(["predict", str(tmp_path / "m"), str(patients), "--out", str(out)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv", "samples.csv", "summary.json"]
    cells = read_csv(out / "cells.csv")
    header = (out / "cells.csv").read_text().splitlines()[0].split(",")
    assert len(cells) == 8 and len(header) == len(set(header))
    assert {c["sample"] for c in cells} == {"P1", "P2"}
    for c in cells:
        assert float(c["p_blast"]) == pytest.approx(0.7, abs=1e-5)
        assert c["blast_probability"] == c["p_blast"]
        assert float(c["p_other"]) + float(c["p_blast"]) == pytest.approx(1, abs=1e-5)
        assert c["predicted"] == "blast" and c["blast"] == "1"  # default threshold 0.5
    samples = {r["sample"]: r for r in read_csv(out / "samples.csv")}
    assert samples["P1"]["n_cells"] == "3" and samples["P2"]["n_cells"] == "5"
    assert samples["P2"]["n_blasts"] == "5" and float(samples["P2"]["blast_fraction"]) == 1.0
    assert float(samples["P2"]["ci_low"]) == pytest.approx(wilson_interval(5, 5)[0], abs=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"]["how"] == "default 0.5" and summary["n_samples"] == 2
    assert summary["calibration"] is None
    assert "P2" in stdout
    # a higher threshold calls no blasts; a second folder given on its own is its own sample
    code, _, err = run(["predict", str(tmp_path / "m"), str(patients / "P1"), "--threshold", "0.8",
                        "--out", str(out), "--json"], capsys)
    assert code == 0, err
    (row,) = read_csv(out / "samples.csv")
    assert row["sample"] == "P1" and row["n_blasts"] == "0" and row["call"] == "uncertain"


def test_samples_from_a_manifest_column(patients, tmp_path, capsys):
    save_model(constant_model(0.1), tmp_path / "model.safetensors")
    manifest = tmp_path / "cells.csv"
    files = sorted(patients.rglob("*.png"))
    manifest.write_text("path,patient\n" + "".join(
        f"{f},{'A' if i % 2 else 'B'}\n" for i, f in enumerate(files)))
    out = tmp_path / "out"
    code, _, err = run(["predict", str(tmp_path / "model.safetensors"), str(manifest),
                        "--sample-col", "patient", "--out", str(out)], capsys)
    assert code == 0, err
    samples = {r["sample"]: r for r in read_csv(out / "samples.csv")}
    assert set(samples) == {"A", "B"} and samples["A"]["n_blasts"] == "0"
    assert samples["A"]["call"] == "uncertain" and samples["B"]["n_cells"] == "4"
    code, _, err = run(["predict", str(tmp_path / "model.safetensors"), str(manifest),
                        "--sample-col", "nope", "--out", str(out)], capsys)
    assert code == 2 and "nope" in err


def test_same_named_folders_keep_apart(tmp_path):
    for parent in ("a", "b"):
        (tmp_path / parent / "S").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / parent / "S" / "x.png")
    names = {s for _, s in collect_samples([tmp_path / "a", tmp_path / "b"])}
    assert len(names) == 2


def test_a_bad_image_is_a_one_line_error_unless_skipped(patients, tmp_path, capsys):
    root = tmp_path / "p"
    (root / "P9").mkdir(parents=True)
    for f in sorted((patients / "P1").glob("*.png")):
        (root / "P9" / f.name).write_bytes(f.read_bytes())
    (root / "P9" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    save_model(constant_model(0.7), tmp_path / "model.safetensors")
    args = ["predict", str(tmp_path / "model.safetensors"), str(root), "--out", str(tmp_path / "o")]
    code, _, err = run(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "broken.png" in err
    code, _, err = run(args + ["--skip-bad"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_cells"] == 3 and "broken.png" in summary["skipped"][0]["path"]


# ---- a RUN: the fold ensemble --------------------------------------------------------------
class EnsembleRunner:
    """Fold f's model says p_blast = 0.2 + 0.1 f (size 12: + 0.3); test predictions that
    separate blasts from others imperfectly."""

    def __call__(self, cells, job):
        rng = np.random.default_rng(job.seed)
        labels = cells.labels[list(job.test_idx)]
        p = np.clip(0.25 + 0.5 * labels + rng.normal(0, 0.2, len(labels)), 0.01, 0.99)
        model = constant_model(0.2 + 0.1 * job.fold + (0.3 if job.size == 12 else 0), seed=job.seed)
        return JobOutcome(metric=0.8, best_epoch=1, epochs_run=1, seconds=0.0, degenerate=False,
                          test_probs=np.stack([1 - p, p], axis=1), history=[], model=model)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    options = ProtocolOptions(folds=3, sizes=(6, 12))
    path = fill_fake_run(tmp_path_factory.mktemp("ens") / "run", EnsembleRunner(), n=60,
                         options=options)
    return path


def test_run_ensemble_is_the_mean_of_its_fold_models(fake_run, patients, tmp_path, capsys):
    predictor = load_predictor(fake_run)
    assert predictor.kind == "run" and predictor.size == 12 and len(predictor.models) == 3
    out = tmp_path / "out"
    code, _, err = run(["predict", str(fake_run), str(patients), "--out", str(out)], capsys)
    assert code == 0, err
    cells = read_csv(out / "cells.csv")
    assert float(cells[0]["p_blast"]) == pytest.approx(np.mean([0.5, 0.6, 0.7]), abs=1e-5)
    code, _, err = run(["predict", str(fake_run), str(patients), "--size", "6", "--out", str(out)],
                       capsys)
    assert code == 0, err
    assert float(read_csv(out / "cells.csv")[0]["p_blast"]) == pytest.approx(0.3, abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"]["training_size"] == 6 and len(summary["source"]["jobs"]) == 3
    assert summary["calibration"]["n"] == 60 and 0 <= summary["calibration"]["ece"] <= 1
    assert (out / "reliability.png").is_file()
    code, _, err = run(["predict", str(fake_run), str(patients), "--size", "7", "--out", str(out)],
                       capsys)
    assert code == 2 and "6, 12" in err


def test_run_fold_is_that_folds_models_alone(fake_run, tmp_path, capsys):
    """evaluate RUN --run-fold F: fold F's models (a sweep's replicates of that fold) and
    its own test predictions for the threshold; a fold without models and a model file
    are refused in one line."""
    from leukolearn.data.synthetic import make_binary, write_image_folder

    predictor = load_predictor(fake_run, fold=1)
    assert predictor.job_ids == ["f01-n12-s0"] and predictor.describe()["fold"] == 1
    y, p = predictor.held_out_predictions([1])
    with RunStore.open(fake_run) as store:
        own = store.predictions("f01-n12-s0")
    assert y.tolist() == (own.labels == 1).tolist()
    np.testing.assert_allclose(p, own.probs[:, 1], atol=1e-6)
    with pytest.raises(LeukolearnError, match="folds with models: 0, 1, 2"):
        load_predictor(fake_run, fold=5)

    root = tmp_path / "lab"
    write_image_folder(make_binary(4, size=SIZE, seed=3), root)
    code, out, err = run(["evaluate", str(fake_run), "folder", str(root), "--run-fold", "1",
                          "--threshold", "0.5", "--resamples", "100", "--keep-duplicates",
                          "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["model"]["jobs"] == ["f01-n12-s0"] and report["model"]["fold"] == 1
    written = fake_run / "evaluations" / "folder-lab-f01" / "cells.csv"
    # fold 1's model at size 12 says p_blast = 0.2 + 0.1 + 0.3 for every cell
    assert {round(float(r["score"]), 4) for r in read_csv(written)} == {0.6}
    model = tmp_path / "m.safetensors"
    save_model(constant_model(0.5), model)
    code, _, err = run(["evaluate", str(model), "folder", str(root), "--run-fold", "1",
                        "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and "--run-fold" in err and "not a run directory" in err


def test_run_threshold_for_a_target_sensitivity(fake_run, patients, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["predict", str(fake_run), str(patients), "--target-sensitivity", "0.9",
                        "--out", str(out)], capsys)
    assert code == 0, err
    t = json.loads((out / "summary.json").read_text())["threshold"]
    assert t["choice"]["sensitivity"] >= 0.9 and t["choice"]["n_positive"] == 30
    assert "pooled test-fold predictions" in t["how"]
    with RunStore.open(fake_run) as store:
        pooled = [store.predictions(r.job_id) for r in store.results() if r.size == 12]
    p_blast = np.concatenate([p.probs[:, 1] for p in pooled])
    y = np.concatenate([p.labels for p in pooled]) == 1
    assert np.mean(p_blast[y] >= t["value"]) == pytest.approx(t["choice"]["sensitivity"])
    assert np.mean(p_blast[y] >= t["value"] + 1e-6) < 0.9  # the highest such threshold


# ---- a single model: calibrate first -------------------------------------------------------
def test_single_model_needs_calibration_for_a_target_sensitivity(patients, tmp_path, capsys):
    from leukolearn.data.synthetic import make_binary, write_image_folder

    model_dir = tmp_path / "m"
    save_model(constant_model(0.6), model_dir / "model.safetensors")
    code, _, err = run(["predict", str(model_dir), str(patients), "--target-sensitivity", "0.9",
                        "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "calibrate" in err
    labelled = tmp_path / "labelled"
    write_image_folder(make_binary(4, size=SIZE, seed=2), labelled)
    calibrated = tmp_path / "cal.safetensors"
    code, stdout, err = run(["calibrate", str(model_dir), "folder", str(labelled), "--positive",
                             "blast", "--part", "all", "--target-sensitivity", "0.9",
                             "--out", str(calibrated)], capsys)
    assert code == 0, err
    assert "threshold" in stdout
    code, _, err = run(["predict", str(calibrated), str(patients), "--target-sensitivity", "0.9",
                        "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["threshold"]["value"] == pytest.approx(0.6, abs=1e-5)
    assert summary["calibration"]["n"] == 8 and "all 8 images" in summary["threshold"]["how"]
    # --part val (the default) needs the split.json that `train` writes beside the model
    args = ["calibrate", str(model_dir), "folder", str(labelled), "--positive", "blast",
            "--target-sensitivity", "0.9", "--out", str(calibrated)]
    code, _, err = run(args, capsys)
    assert code == 2 and "split.json" in err
    val = sorted(p.relative_to(labelled).as_posix() for p in labelled.rglob("*.png"))[::2]
    (model_dir / "split.json").write_text(json.dumps({"train": [], "val": val, "test": []}))
    code, _, err = run(args, capsys)
    assert code == 0, err
    from leukolearn.model.weights import load_model

    info = load_model(calibrated).config.extra["calibration"]
    assert info["reliability"]["n"] == len(val) and "val images" in info["source"]


# ---- the adjusted count: corrected for the error rates at the threshold --------------------
ADJUSTED_COLUMNS = ["adjusted_fraction", "adjusted_ci_low", "adjusted_ci_high", "call_on",
                    "adjusted_note"]
DOMAIN_COLUMNS = ["domain", "domain_distance_ratio", "domain_outside_share"]


def pooled_rates(run_dir, size, threshold, job_id=None):
    with RunStore.open(run_dir) as store:
        preds = [store.predictions(r.job_id) for r in store.results()
                 if (r.size == size if job_id is None else r.job_id == job_id)]
    p = np.concatenate([x.probs[:, 1] for x in preds])
    y = np.concatenate([x.labels for x in preds]) == 1
    return np.mean(p[y] >= threshold), np.mean(p[~y] >= threshold), int(y.sum()), int((~y).sum())


@pytest.mark.slow
def test_run_counts_are_corrected_for_its_error_rates(fake_run, patients, tmp_path, capsys):
    from leukolearn.predict.counts import adjusted_count

    out = tmp_path / "out"
    code, stdout, err = run(["predict", str(fake_run), str(patients), "--out", str(out),
                             "--threshold", "0.55"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    tpr, fpr, n_pos, n_neg = pooled_rates(fake_run, 12, 0.55)
    rates = summary["error_rates"]
    assert (rates["tpr"], rates["fpr"]) == pytest.approx((tpr, fpr))
    assert (rates["n_positive"], rates["n_negative"]) == (n_pos, n_neg) == (30, 30)
    assert "pooled test-fold predictions" in rates["source"]
    assert summary["adjusted_count"]["applied"] and summary["adjusted_count"]["why_not"] is None
    header = (out / "samples.csv").read_text().splitlines()[0].split(",")
    assert header == ["sample", "n_cells", "n_blasts", "blast_fraction", "ci_low", "ci_high",
                      "above_threshold", "call", *ADJUSTED_COLUMNS, *DOMAIN_COLUMNS]
    for row in read_csv(out / "samples.csv"):  # every cell 0.6 >= 0.55: q = 1
        q = float(row["blast_fraction"])
        expected = adjusted_count(q, tpr, fpr)
        assert float(row["adjusted_fraction"]) == pytest.approx(expected, abs=1e-4)
        assert float(row["adjusted_ci_low"]) <= float(row["adjusted_fraction"]) \
            <= float(row["adjusted_ci_high"])
        assert row["call_on"] == "adjusted"
    assert "adjusted" in stdout and "TPR" in stdout
    # the rates follow the threshold in use
    code, _, err = run(["predict", str(fake_run), str(patients), "--out", str(out),
                        "--threshold", "0.7", "--json"], capsys)
    assert code == 0, err
    rates = json.loads((out / "summary.json").read_text())["error_rates"]
    assert (rates["tpr"], rates["fpr"]) == pytest.approx(pooled_rates(fake_run, 12, 0.7)[:2])
    # --raw-count: no correction, the call on the raw interval
    code, stdout, err = run(["predict", str(fake_run), str(patients), "--out", str(out),
                             "--threshold", "0.55", "--raw-count"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["error_rates"] is None and not summary["adjusted_count"]["applied"]
    assert "--raw-count" in summary["adjusted_count"]["why_not"]
    for row in read_csv(out / "samples.csv"):
        assert [row[c] for c in ADJUSTED_COLUMNS] == ["", "", "", "raw", ""]
        assert row["call"] == "above"  # 100 % raw, whole interval above 20 %
    for s in summary["samples"]:
        assert s["adjusted_fraction"] is None and s["call_on"] == "raw"
    assert "adjusted (" not in stdout


def test_a_sweeps_weights_file_uses_its_jobs_test_predictions(fake_run, patients, tmp_path,
                                                              capsys):
    with RunStore.open(fake_run) as store:
        job = next(r.job_id for r in store.results() if r.size == 12)
        weights = store.weights_path(job)
    out = tmp_path / "out"
    code, _, err = run(["predict", str(weights), str(patients), "--out", str(out)], capsys)
    assert code == 0, err
    rates = json.loads((out / "summary.json").read_text())["error_rates"]
    tpr, fpr, n_pos, n_neg = pooled_rates(fake_run, 12, 0.5, job_id=job)
    assert (rates["tpr"], rates["fpr"]) == pytest.approx((tpr, fpr))
    assert (rates["n_positive"], rates["n_negative"]) == (n_pos, n_neg) == (10, 10)
    assert job in rates["source"]
    assert read_csv(out / "samples.csv")[0]["call_on"] == "adjusted"


def test_a_plain_model_has_no_error_rates(patients, tmp_path, capsys):
    save_model(constant_model(0.7), tmp_path / "model.safetensors")
    out = tmp_path / "out"
    code, stdout, err = run(["predict", str(tmp_path / "model.safetensors"), str(patients),
                             "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["error_rates"] is None and "calibrate" in summary["adjusted_count"]["why_not"]
    rows = read_csv(out / "samples.csv")
    assert all(r["call_on"] == "raw" and r["adjusted_fraction"] == "" for r in rows)
    assert "adjusted (" not in stdout and "not corrected" in stdout


def test_a_calibrated_model_uses_its_stored_rates_at_its_threshold(patients, tmp_path, capsys):
    from leukolearn.predict.threshold import error_rates

    def calibrated(sensitivity, specificity):
        return load_predictor(save_calibrated(tmp_path / "cal.safetensors", sensitivity,
                                              specificity, 40, 60))

    predictor = calibrated(0.9, 0.8)
    rates, note = error_rates(predictor, [1], 0.6)
    assert (rates.tpr, rates.fpr) == pytest.approx((0.9, 0.2))
    assert (rates.n_positive, rates.n_negative) == (40, 60) and "calibrate" in rates.source
    rates, note = error_rates(predictor, [1], 0.3)  # --threshold: rates unknown there
    assert rates is None and "0.6" in note
    rates, _ = error_rates(calibrated(0.5, 0.55), [1], 0.6)  # TPR - FPR = 0.05: not usable
    assert rates is not None and not rates.usable
    out = tmp_path / "out"
    code, stdout, err = run(["predict", str(tmp_path / "cal.safetensors"), str(patients),
                             "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"]["value"] == pytest.approx(0.6)
    assert summary["error_rates"]["separation"] == pytest.approx(0.05)
    assert not summary["adjusted_count"]["applied"]
    assert "TPR - FPR" in summary["adjusted_count"]["why_not"]
    assert all(r["call_on"] == "raw" for r in read_csv(out / "samples.csv"))
    assert "adjusted (" not in stdout


def test_held_out_ids_of_a_sweep_weights_file_come_from_its_run(fake_run, tmp_path):
    from leukolearn.predict.threshold import held_out_ids

    with RunStore.open(fake_run) as store:
        job = store.results()[0].job_id
        _, val, test = store.split(job)
        names = store.image_ids()
        weights = store.weights_path(job)
    ids, where = held_out_ids(weights, "val")
    assert ids == {names[i] for i in val} and job in where
    assert held_out_ids(weights, "test")[0] == {names[i] for i in test}
    with pytest.raises(LeukolearnError, match="not the weights file of a finished sweep job"):
        held_out_ids(weights.with_name("f09-n6-s0.safetensors"), "val")
    with pytest.raises(LeukolearnError, match="no split.json"):
        held_out_ids(tmp_path / "elsewhere" / "model.safetensors", "val")


def test_a_sample_that_contradicts_the_rates_prints_undefined_not_a_point(patients, tmp_path,
                                                                           capsys):
    """Rates stored by calibrate: TPR 0.5 and FPR 0.1 on 500 + 500 cells. Every cell is
    called (p 0.7 >= 0.6), so P2's 5 of 5 (95 % CI from 56.6 %) are more than TPR allows
    (up to 54.4 %): clipping used to print "100.0 (100-100)". P1's 3 of 3 (from 43.9 %)
    still fit: an interval."""
    save_calibrated(tmp_path / "cal.safetensors", 0.5, 0.9, 500, 500)
    out = tmp_path / "out"
    code, stdout, err = run(["predict", tmp_path / "cal.safetensors", patients, "--out", out],
                            capsys)
    assert code == 0, err
    rows = {r["sample"]: r for r in read_csv(out / "samples.csv")}
    p2 = rows["P2"]
    assert [p2[c] for c in ADJUSTED_COLUMNS[:3]] == ["", "", ""] and p2["call"] == "uncertain"
    assert p2["call_on"] == "adjusted" and "above the sensitivity 50.0%" in p2["adjusted_note"]
    assert "100-100" not in stdout and "undefined" in stdout
    assert "P2: adjusted count undefined" in stdout
    p1 = rows["P1"]
    assert p1["adjusted_note"] == "" and float(p1["adjusted_ci_low"]) < float(p1["adjusted_ci_high"])
    summary = json.loads((out / "summary.json").read_text())
    p2_json = next(s for s in summary["samples"] if s["sample"] == "P2")
    assert p2_json["adjusted_fraction"] is None and p2_json["adjusted_note"]


@pytest.mark.parametrize("option, value, hint", [
    ("--confidence", "95", "0.95"), ("--confidence", "1", None), ("--confidence", "0", None),
    ("--confidence", "nan", None), ("--diagnostic-threshold", "20", "0.2"),
    ("--diagnostic-threshold", "0", None), ("--threshold", "1.5", None),
    ("--target-sensitivity", "0", None)])
def test_fractions_are_checked_before_any_work(option, value, hint, patients, tmp_path, capsys):
    from leukolearn.predict.predictor import PredictOptions

    save_model(constant_model(0.7), tmp_path / "model.safetensors")
    out = tmp_path / "out"
    code, _, err = run(["predict", tmp_path / "model.safetensors", patients, option, value,
                        "--out", out], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and option in lines[0], err
    if hint:
        assert f"give {hint}" in lines[0]
    assert not out.exists()  # refused before anything was read or written
    # the Python API refuses the same, and says what fraction was meant
    field = option.lstrip("-").replace("-", "_")
    with pytest.raises(LeukolearnError, match=option) as exc:
        PredictOptions(**{field: float(value)})
    if hint:
        assert f"give {hint}" in str(exc.value)


def test_the_table_names_the_confidence_as_given(patients, tmp_path, capsys):
    save_model(constant_model(0.7), tmp_path / "model.safetensors")
    code, stdout, err = run(["predict", tmp_path / "model.safetensors", patients, "--confidence",
                             "0.999", "--diagnostic-threshold", "0.125", "--out", tmp_path / "o"],
                            capsys)
    assert code == 0, err
    assert "99.9% CI; flag at 12.5%" in stdout  # ":.0%" printed "100% CI" and "12%"
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["confidence"] == 0.999
    low, high = wilson_interval(5, 5, 0.999)
    p2 = next(s for s in summary["samples"] if s["sample"] == "P2")  # 5 of 5 called
    assert (p2["ci_low"], p2["ci_high"]) == pytest.approx((low, high))
