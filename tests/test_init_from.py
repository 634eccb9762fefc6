"""A head start (`--init-from MODEL`, TrainConfig.init_from): what is copied, what is frozen,
both training paths, the CLI of train and sweep."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import leukolearn.training.loop as loop_module
from leukolearn.analysis.metrics import roc_auc
from leukolearn.data.synthetic import make_binary, write_image_folder
from leukolearn.errors import LeukolearnError
from leukolearn.model import kernels
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.model.weights import load_model, save_model
from leukolearn.training.config import TrainConfig
from leukolearn.training.head_start import apply_head_start, load_head_start
from leukolearn.training.loop import predict_proba, train_model
from helpers import run_cli

SIZE = 190
PATHS = [pytest.param(True, id="kernels"), pytest.param(False, id="torch-layers")]


@pytest.fixture(scope="module")
def cells():
    return make_binary(12, size=SIZE, seed=3)  # 24 images


@pytest.fixture(scope="module")
def source(tmp_path_factory, cells):
    """A model trained for 2 epochs on the same task, saved as `train` saves it."""
    result = train_model(cells, np.arange(16), np.arange(16, 24),
                         TrainConfig.binary(max_epochs=2), seed=0)
    path = tmp_path_factory.mktemp("source") / "model.safetensors"
    save_model(result.model, path)
    return path


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _spy_start(monkeypatch):
    """The weights each training starts from (when its optimiser is made)."""
    starts = []
    real = loop_module.make_optimizer

    def spy(model, config):
        starts.append(_state(model))
        return real(model, config)

    monkeypatch.setattr(loop_module, "make_optimizer", spy)
    return starts


def _kernels(use):
    if use and not kernels.enabled():
        pytest.skip("the fused kernels are not built here")
    return kernels.disabled() if not use else _nothing()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("use_kernels", PATHS)
@pytest.mark.parametrize("freeze", [True, False])
def test_training_starts_from_the_source_and_freezing_keeps_its_conv_blocks(
        cells, source, monkeypatch, use_kernels, freeze):
    want = _state(load_model(source))
    starts = _spy_start(monkeypatch)
    config = TrainConfig.binary(max_epochs=3, init_from=str(source), freeze_features=freeze)
    with _kernels(use_kernels):
        result = train_model(cells, np.arange(2, 14), np.arange(16, 24), config, seed=5)
    assert result.kernels == use_kernels
    (start,) = starts
    for name, value in start.items():  # epoch 0: all of it (same classes, same names)
        assert torch.equal(value, want[name]), name
    end = result.model.state_dict()
    for name in want:
        if name.startswith("features."):
            # frozen: bit-identical; trained: moved
            assert torch.equal(end[name], want[name]) == freeze, name
        else:  # the dense layers train either way
            assert not torch.equal(end[name], want[name]), name


def test_other_classes_keep_a_fresh_classifier_and_a_restart_draws_a_new_one(
        cells, source, monkeypatch):
    import leukolearn.model.weights as weights_module

    want = _state(load_model(source))
    other = replace(cells, class_names=("rest", "ig"))  # same count, other names
    reads = []
    real_load = weights_module.load_model
    monkeypatch.setattr(weights_module, "load_model", lambda p: reads.append(p) or real_load(p))
    # The first attempt is made dead (as tests/test_train.py does): it restarts once.
    real_build, built = loop_module.build_model, []

    def build(config, *, init, seed):
        model = real_build(config, init=init, seed=seed)
        built.append(_state(model))
        return model

    def kill_first(model, head):
        model = apply_head_start(model, head)
        if len(built) == 1:
            with torch.no_grad():
                model.hidden.weight.zero_()
                model.hidden.bias.zero_()
        return model

    monkeypatch.setattr(loop_module, "build_model", build)
    monkeypatch.setattr(loop_module, "apply_head_start", kill_first)
    starts = _spy_start(monkeypatch)
    config = TrainConfig.binary(max_epochs=1, patience=1, lr=1e-9, restarts=1,
                                init_from=str(source))
    result = train_model(other, np.arange(12), np.arange(16, 24), config, seed=0)
    assert result.restarts == 1 and len(starts) == 2
    assert len(reads) == 1  # the source is read once per training, not per attempt
    second = starts[1]
    for name in want:
        if name.startswith(("features.", "hidden.")):
            assert torch.equal(second[name], want[name]), name  # again from the source
        else:  # the classifier: the fresh draw of the attempt's own seed
            assert torch.equal(second[name], built[1][name]), name
            assert not torch.equal(second[name], want[name])
    # keras init: zero biases; the weights are a new draw
    assert not torch.equal(built[0]["classifier.weight"], built[1]["classifier.weight"])


def test_a_source_of_another_input_size_is_refused(cells, source):
    bigger = make_binary(3, size=SIZE + 10, seed=1)
    config = TrainConfig.binary(max_epochs=1, init_from=str(source))
    with pytest.raises(LeukolearnError, match=rf"model.safetensors: a model of {SIZE} px images, "
                                              rf"but this training's images are {SIZE + 10} px"):
        train_model(bigger, np.arange(3), np.arange(3, 6), config, seed=0)
    head = load_head_start(source)
    with pytest.raises(LeukolearnError, match="conv blocks of"):
        apply_head_start(build_model(ModelConfig(input_size=SIZE, filters=(4, 8, 8, 8, 16, 8))),
                         head)


def test_a_folder_written_by_train_is_accepted_and_a_missing_file_is_named(source, tmp_path):
    assert load_head_start(source.parent).path == source.resolve()
    with pytest.raises(LeukolearnError, match="no such model file"):
        load_head_start(tmp_path / "nothing.safetensors")
    with pytest.raises(LeukolearnError, match="a folder without model.safetensors"):
        load_head_start(tmp_path)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_batched_training_equals_separate_trainings_from_a_head_start(cells, source, optimizer):
    """train_many from a head start, frozen, equals train_model on the same jobs (the
    PyTorch layers on both; tolerances as tests/test_batched.py's)."""
    from leukolearn.training.batched import train_many

    rng = np.random.default_rng(0)
    order = rng.permutation(len(cells.labels))
    jobs = [(order[:12], order[18:24], 7), (order[2:9], order[12:16], 8)]
    config = TrainConfig(optimizer=optimizer, lr=1e-3, max_epochs=2, patience=5, augment=False,
                         init_from=str(source), freeze_features=True)
    want_features = {k: v for k, v in _state(load_model(source)).items()
                     if k.startswith("features.")}
    with kernels.disabled():
        batched = train_many(cells, jobs, config, "cpu")
        separate = [train_model(cells, t, v, config, seed=s) for t, v, s in jobs]
    for got, want in zip(batched, separate):
        assert (got.epochs_run, got.best_epoch) == (want.epochs_run, want.best_epoch)
        for g, w in zip(got.history, want.history):
            assert g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-4, abs=1e-6)
        for (name, g), w in zip(got.model.state_dict().items(), want.model.state_dict().values()):
            torch.testing.assert_close(g, w, rtol=1e-3, atol=2e-4, msg=name)
            if name in want_features:
                assert torch.equal(g, want_features[name]), name


@pytest.mark.slow
def test_fine_tuning_beats_a_fresh_start_on_few_cells(tmp_path):
    """A model of the same synthetic task (80 cells), fine-tuned on 10 new cells for 5
    epochs, under other class names (so its classifier starts fresh: only the conv blocks
    and the hidden layer carry over). Measured over seeds 0-4 (kernels on): fine-tuned
    0.998-1.000, from scratch 0.60-0.99, on 100 new test cells."""
    pretrain = make_binary(40, size=SIZE, seed=100)
    source = train_model(pretrain, np.arange(64), np.arange(64, 80),
                         TrainConfig.binary(max_epochs=30, patience=10), seed=0)
    path = save_model(source.model, tmp_path / "pre.safetensors")
    new = replace(make_binary(60, size=SIZE, seed=200), class_names=("rest", "target"))
    train, val, test = np.arange(10), np.arange(10, 20), np.arange(20, 120)
    tuned = train_model(new, train, val, TrainConfig.binary(max_epochs=5, patience=5,
                                                            init_from=str(path)), seed=0)
    auc = roc_auc(new.labels[test], predict_proba(tuned.model, new.images[test])[:, 1])
    assert auc > 0.9


# ---- the command line -----------------------------------------------------------------
@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cells")
    write_image_folder(make_binary(9, size=SIZE, seed=1), root)
    return root


TRAIN = ["--positive", "blast", "--size", str(SIZE), "--train-size", "6", "--max-epochs", "1",
         "--json"]


def test_train_init_from_end_to_end(image_folder, source, tmp_path, capsys):
    out = tmp_path / "tuned"
    code, stdout, err = run_cli(["train", "folder", image_folder, *TRAIN, "--out", out,
                                 "--init-from", source.parent, "--freeze-features"], capsys)
    assert code == 0, err
    stored = json.loads((out / "train_config.json").read_text())
    assert stored["init_from"] == str(source.resolve()) and stored["freeze_features"] is True
    model = load_model(out / "model.safetensors")
    assert model.config.extra["init_from"] == {
        "path": str(source.resolve()),
        "weights_blake2b": _stored_digest(source)}
    want = load_model(source).state_dict()
    for name, value in model.state_dict().items():
        if name.startswith("features."):
            assert torch.equal(value, want[name]), name


def _stored_digest(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["weights_blake2b"]


@pytest.mark.parametrize("extra, words", [
    (["--init-from", "no-such.safetensors"], "no-such.safetensors: no such model file"),
    (["--freeze-features"], "needs a model to start from (--init-from)"),
])
def test_train_refuses_a_bad_init_from_in_one_line_before_any_work(
        image_folder, tmp_path, capsys, extra, words):
    out = tmp_path / "model"
    code, _, err = run_cli(["train", "folder", image_folder, *TRAIN, "--out", out, *extra], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert words in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_train_refuses_a_source_of_another_size(image_folder, source, tmp_path, capsys):
    code, _, err = run_cli(["train", "folder", image_folder, *TRAIN, "--size", str(SIZE + 10),
                            "--out", tmp_path / "m", "--init-from", source], capsys)
    assert code == 2 and f"a model of {SIZE} px images" in err and "Traceback" not in err


def test_sweep_init_from_is_stored_absolute_and_resumes_from_elsewhere(
        image_folder, source, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    sweep = ["sweep", "folder", image_folder, "--out", run, "--preset", "quick", "--folds", "3",
             "--run-folds", "1", "--sizes", "2", "--size", str(SIZE), "--max-epochs", "1",
             "--patience", "1", "--positive", "blast", "--no-progress"]
    monkeypatch.chdir(source.parent.parent)
    relative = source.relative_to(source.parent.parent)
    code, _, err = run_cli([*sweep, "--init-from", relative, "--freeze-features"], capsys)
    assert code == 0, err
    train = json.loads((run / "config.json").read_text())["train"]
    assert train["init_from"] == str(source.resolve()) and train["freeze_features"] is True
    monkeypatch.chdir(tmp_path)  # the same model named from another folder: the same run
    code, _, err = run_cli([*sweep, "--init-from", source.parent, "--freeze-features"], capsys)
    assert code == 0 and "already in" in err, err
    code, _, err = run_cli([*sweep, "--init-from", tmp_path / "none.safetensors"], capsys)
    assert code == 2 and "none.safetensors: no such model file" in err
