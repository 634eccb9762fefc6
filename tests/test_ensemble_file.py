"""`train --ensemble K`: K networks in one model file, which predict, evaluate and calibrate
take and the one-network commands refuse with one line."""
import csv
import json

import numpy as np
import pytest

from helpers import run_cli as run
from leukolearn.data.decode import read_image, fit_to_square
from leukolearn.data.synthetic import make_binary, write_image_folder
from leukolearn.errors import BadFileError
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import load_model, load_models, save_models
from leukolearn.training.loop import predict_proba

SIZE = 190
TRAIN = ["--positive", "blast", "--size", str(SIZE), "--train-size", "12", "--val-size", "6",
         "--test-size", "6", "--max-epochs", "3", "--json"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    write_image_folder(make_binary(12, size=SIZE, seed=1), root)
    return root


@pytest.fixture(scope="module")
def trained(image_folder, tmp_path_factory):
    """The same split trained as one network and as an ensemble of three."""
    from leukolearn.cli import main

    out = tmp_path_factory.mktemp("trained")
    for name, extra in (("single", []), ("ensemble", ["--ensemble", "3"])):
        try:
            main(["train", "folder", str(image_folder), "--out", str(out / name), *TRAIN, *extra])
        except SystemExit as exc:
            assert exc.code in (0, None)
    return out


def test_an_ensemble_file_round_trips_and_a_changed_byte_is_refused(tmp_path):
    models = [build_model(ModelConfig(input_size=SIZE), seed=s) for s in range(3)]
    path = save_models(models, tmp_path / "ensemble.safetensors")
    loaded = load_models(path)
    assert len(loaded) == 3
    for a, b in zip(models, loaded):
        assert all(a.state_dict()[k].equal(v) for k, v in b.state_dict().items())
    with pytest.raises(BadFileError, match="an ensemble of 3 networks"):
        load_model(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # a byte of the last network's weights
    (tmp_path / "changed.safetensors").write_bytes(bytes(data))
    with pytest.raises(BadFileError, match="do not match the checksum"):
        load_models(tmp_path / "changed.safetensors")
    single = save_models(models[:1], tmp_path / "one.safetensors")  # one network: today's file
    one = load_model(single).state_dict()
    assert all(v.equal(one[k]) for k, v in models[0].state_dict().items())


@pytest.mark.slow
def test_member_0_is_the_single_training_and_the_test_scores_their_mean(trained, image_folder):
    single = json.loads((trained / "single" / "metrics.json").read_text())
    metrics = json.loads((trained / "ensemble" / "metrics.json").read_text())
    members = load_models(trained / "ensemble" / "model.safetensors")
    alone = load_model(trained / "single" / "model.safetensors")
    assert len(members) == 3 and metrics["ensemble"] == 3
    assert len({m["seed"] for m in metrics["members"]}) == 3
    assert all(v.equal(members[0].state_dict()[k]) for k, v in alone.state_dict().items())
    assert metrics["members"][0]["best_epoch"] == single["best_epoch"]
    history = json.loads((trained / "ensemble" / "history.json").read_text())
    assert len(history["members"]) == 3
    # every network carries its own domain check (predict's verdict votes over them)
    assert all("domain" in m.config.extra for m in members)


def test_predict_and_calibrate_use_the_mean_of_the_networks(trained, image_folder, tmp_path, capsys):
    model = trained / "ensemble"
    code, _, err = run(["predict", model, image_folder / "blast", "--out", tmp_path / "pred"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "pred" / "cells.csv").open()))
    images = np.stack([fit_to_square(read_image(r["path"]), SIZE) for r in rows])
    members = load_models(model / "model.safetensors")
    mean = np.mean([predict_proba(m, images)[:, 1] for m in members], axis=0)
    assert np.allclose([float(r["p_blast"]) for r in rows], mean, atol=1e-5)
    assert not np.allclose(mean, predict_proba(members[0], images)[:, 1], atol=1e-3)
    out = tmp_path / "calibrated.safetensors"
    code, _, err = run(["calibrate", model, "folder", image_folder, "--positive", "blast",
                        "--size", SIZE, "--part", "all", "--target-sensitivity", "0.9",
                        "--out", out], capsys)
    assert code == 0, err
    calibrated = load_models(out)
    assert len(calibrated) == 3
    stored = {json.dumps(m.config.extra["calibration"], sort_keys=True) for m in calibrated}
    assert len(stored) == 1  # one calibration, of the ensemble, in every network


def test_one_network_commands_refuse_an_ensemble_in_one_line(trained, image_folder, tmp_path, capsys):
    model = trained / "ensemble" / "model.safetensors"
    code, _, err = run(["export", model, "--onnx", tmp_path / "m.onnx"], capsys)
    assert code == 2 and "ensemble of 3 networks" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["train", "folder", image_folder, "--out", tmp_path / "t",
                        "--init-from", model, *TRAIN], capsys)
    assert code == 2 and "ensemble of 3 networks" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()
