"""Input normalisation while training (`--input-norm`, training.input_norm): folded into the
first convolution afterwards, so the model on pixel / 255 is what was trained on
standardised inputs; refused where it cannot run."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leukolearn.analysis.metrics import roc_auc
from leukolearn.data.synthetic import make_binary
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import ModelConfig, build_model
from leukolearn.training.batched import train_many
from leukolearn.training.config import TrainConfig
from leukolearn.training.input_norm import channel_stats, fold_into_first_conv, standardise
from leukolearn.training.loop import predict_proba, to_tensor, train_model


def test_the_folded_network_on_raw_pixels_is_the_network_on_standardised_ones():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 190, 190, 3), dtype=np.uint8)
    images[..., 2] //= 4  # channels with other means and spreads
    stats = channel_stats(images)
    assert stats.mean[2] < 0.2 < stats.mean[0] and stats.std[2] < stats.std[0]
    model = build_model(ModelConfig(input_size=190, n_classes=2, class_names=("a", "b")), seed=0)
    x = to_tensor(images).float() / 255
    with torch.no_grad():
        expected = model(standardise(x, stats))
        fold_into_first_conv(model, stats)
        assert torch.allclose(model(x), expected, atol=1e-4)
    assert not torch.allclose(expected, expected[:1].expand_as(expected))  # not a dead net


def test_a_standardised_training_learns_and_its_model_needs_no_statistics():
    cells = make_binary(12, size=190, seed=1)  # 24 images, the labels alternate
    train, val = np.arange(16), np.arange(16, 24)
    config = TrainConfig.binary(max_epochs=30, patience=5, input_norm=True)
    result = train_model(cells, train, val, config, seed=0)
    probs = predict_proba(result.model, cells.images[val])
    assert roc_auc(cells.labels[val], probs[:, 1]) > 0.9
    # The best epoch's validation loss was measured on standardised inputs; the folded
    # model on raw pixels gives the same loss.
    best = result.history[result.best_epoch - 1]["val_loss"]
    raw = F.nll_loss(torch.log(torch.from_numpy(probs)), torch.from_numpy(cells.labels[val]))
    assert raw.item() == pytest.approx(best, rel=1e-3, abs=1e-4)


def test_input_norm_is_refused_where_it_cannot_run(tmp_path):
    with pytest.raises(LeukolearnError, match="cannot start from a model"):
        TrainConfig(input_norm=True, init_from=str(tmp_path / "m.safetensors"))
    cells = make_binary(4, size=190, seed=0)
    with pytest.raises(LeukolearnError, match="does not standardise inputs"):
        train_many(cells, [(np.arange(4), np.arange(4, 8), 0)],
                   TrainConfig.binary(max_epochs=1, input_norm=True))
