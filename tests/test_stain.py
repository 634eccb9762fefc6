"""Stain normalisation (`data.stain`, `TrainConfig.stain_norm`): fitted on the training
cells, stored with the model, applied to every image it is given."""
from __future__ import annotations

import numpy as np
import pytest

from leukolearn.data.stain import STAIN_KEY, fit_stain, normalise
from leukolearn.data.synthetic import make_binary
from leukolearn.errors import LeukolearnError
from leukolearn.training.config import TrainConfig
from leukolearn.training.loop import predict_proba, train_model

SIZE = 190


def recoloured(images):
    x = images.astype(np.float32)
    x[..., 0] = x[..., 0] * 0.85 + 25  # another lab's stain: redder background, bluer cells
    x[..., 2] = x[..., 2] * 0.9 + 10
    return np.clip(x, 0, 255).astype(np.uint8)


def lab_means(images):
    from skimage.color import rgb2lab

    return np.array([rgb2lab(im).reshape(-1, 3).mean(axis=0) for im in images])


def test_normalising_brings_another_stain_to_the_target():
    cells = make_binary(10, size=SIZE, seed=1)
    target = fit_stain(cells.images)
    assert target["method"] == "reinhard" and len(target["means"]) == 3
    moved = lab_means(recoloured(cells.images))
    back = lab_means(normalise(recoloured(cells.images), target))
    # Every image's mean L, a, b now sits at the target's, whatever its stain was.
    assert np.abs(back - np.array(target["means"])).max() < 3.0
    assert np.abs(moved - np.array(target["means"])).max() > 5.0
    blank = np.full((1, SIZE, SIZE, 3), 200, np.uint8)  # no spread: left as it is
    np.testing.assert_array_equal(normalise(blank, target), blank)


@pytest.mark.slow
def test_a_stain_normalised_model_stores_its_target_and_is_stain_invariant():
    cells = make_binary(20, size=SIZE, seed=2)
    idx = np.arange(len(cells.labels))
    config = TrainConfig(max_epochs=3, patience=3, stain_norm="reinhard")
    result = train_model(cells, idx[:28], idx[28:], config, seed=0)
    assert result.model.config.extra[STAIN_KEY]["method"] == "reinhard"
    own = predict_proba(result.model, cells.images)
    other = predict_proba(result.model, recoloured(cells.images))
    assert np.abs(own - other).mean() < 0.02


def test_stain_normalisation_is_refused_where_it_cannot_apply(tmp_path):
    from leukolearn.model.onnx import export_onnx
    from leukolearn.training.batched import train_many

    cells = make_binary(6, size=SIZE, seed=3)
    config = TrainConfig(max_epochs=1, patience=1, stain_norm="reinhard")
    with pytest.raises(LeukolearnError, match="does not normalise stains"):
        train_many(cells, [(np.arange(8), np.arange(8, 12), 0)], config)
    result = train_model(cells, np.arange(8), np.arange(8, 12), config, seed=0)
    with pytest.raises(LeukolearnError, match="ONNX"):
        export_onnx(result.model, tmp_path / "m.onnx")
    with pytest.raises(LeukolearnError, match="unknown stain normalisation"):
        TrainConfig(stain_norm="macenko")
