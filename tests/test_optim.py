"""The learning-rate schedule (`TrainConfig.lr_schedule`, training.optim): constant as the
paper, or halved on a validation plateau; refused where it cannot run."""
import numpy as np
import pytest

import leukolearn.training.loop as loop_module
from leukolearn.data.synthetic import make_binary
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.training.batched import train_many
from leukolearn.training.config import TrainConfig
from leukolearn.training.loop import train_model
from leukolearn.training.optim import MIN_LR, make_optimizer, make_schedule


def _optimizer(config):
    model = build_model(ModelConfig(input_size=190, n_classes=2, class_names=("a", "b")), seed=0)
    return make_optimizer(model, config)


def test_the_paper_keeps_its_rate_and_plateau_halves_it_after_a_fifth_of_the_patience():
    paper = TrainConfig.binary(patience=50)
    assert make_schedule(_optimizer(paper), paper) is None
    config = TrainConfig.binary(patience=50, lr_schedule="plateau")
    optimizer = _optimizer(config)
    schedule = make_schedule(optimizer, config)
    schedule.step(1.0)  # the best so far
    rates = []
    for _ in range(11 * 20):  # a validation loss that never improves again
        schedule.step(1.0)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[9] == pytest.approx(1e-3)  # 10 epochs without improvement: still waiting
    assert rates[10] == pytest.approx(5e-4)  # the 11th halves it
    assert min(rates) == pytest.approx(MIN_LR)  # and it stops at the floor
    schedule.step(0.5)  # an improvement resets the wait, not the rate
    assert optimizer.param_groups[0]["lr"] == pytest.approx(MIN_LR)


def test_a_plateau_training_lowers_its_rate_and_still_learns(monkeypatch):
    from leukolearn.analysis.metrics import roc_auc
    from leukolearn.training.loop import predict_proba

    made = []

    def spy(optimizer, config):
        made.append(optimizer)
        return make_schedule(optimizer, config)

    monkeypatch.setattr(loop_module, "make_schedule", spy)
    cells = make_binary(12, size=190, seed=1)  # 24 images, the labels alternate
    train, val = np.arange(16), np.arange(16, 24)
    config = TrainConfig.binary(max_epochs=150, patience=5, lr_schedule="plateau")
    result = train_model(cells, train, val, config, seed=2)  # seed 2 stops after ~15 epochs
    # Early stopping ended it: 5 epochs without improvement, so the schedule's 1 was passed.
    assert result.epochs_run < config.max_epochs
    assert made and made[0].param_groups[0]["lr"] < config.lr
    probs = predict_proba(result.model, cells.images[val])[:, 1]
    assert roc_auc(cells.labels[val], probs) > 0.9


def test_a_schedule_is_refused_where_networks_train_together():
    cells = make_binary(4, size=190, seed=0)
    config = TrainConfig.binary(max_epochs=1, lr_schedule="plateau")
    with pytest.raises(LeukolearnError, match="keeps the learning rate constant"):
        train_many(cells, [(np.arange(4), np.arange(4, 8), 0)], config)


def test_an_unknown_schedule_is_refused():  # the CLI's words: tests/test_bad_inputs.py
    with pytest.raises(LeukolearnError, match="unknown learning-rate schedule 'cosine'"):
        TrainConfig(lr_schedule="cosine")
