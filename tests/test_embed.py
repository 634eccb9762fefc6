"""Embeddings: behaviour on synthetic clusters (openTSNE-style thresholds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from leukolearn.explain.embed import hidden_features, separation, tsne_2d
from leukolearn.errors import LeukolearnError
from leukolearn.model.cnn import ModelConfig, build_model


def _clusters(n_per_class: int = 30, dim: int = 32, gap: float = 12.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n_per_class, dim))
    y = np.repeat([0, 1], n_per_class)
    x[y == 1, 0] += gap  # clusters `gap` standard deviations apart along one axis
    return x, y


def test_separation_is_high_for_clusters_and_chance_for_shuffled_labels():
    x, y = _clusters()
    good = separation(x, y)
    assert good["silhouette"] > 0.3 and good["knn_accuracy"] > 0.95
    assert good["chance"] == 0.5 and good["k"] == 5 and good["n"] == 60
    shuffled = separation(x, np.random.default_rng(1).permutation(y))
    assert abs(shuffled["silhouette"]) < 0.05
    assert 0.25 < shuffled["knn_accuracy"] < 0.75


def test_separation_ignores_the_query_itself_even_with_duplicates():
    # two copies of each point: leave-one-out must still vote with the copy, not itself
    x = np.repeat(np.arange(6, dtype=float)[:, None], 2, axis=0)  # (12, 1)
    y = np.repeat([0, 1, 0, 1, 0, 1], 2)
    assert separation(x, y, k=1)["knn_accuracy"] == 1.0
    assert np.isnan(separation(x[:2], np.array([0, 0]))["silhouette"])


@pytest.mark.slow
def test_tsne_shape_determinism_and_separation():
    x, y = _clusters(20)
    a, b = tsne_2d(x, seed=3), tsne_2d(x, seed=3)
    assert a.shape == (40, 2)
    np.testing.assert_array_equal(a, b)
    assert separation(a, y)["knn_accuracy"] > 0.95
    assert tsne_2d(x[:7], seed=0).shape == (7, 2)  # perplexity adapted to tiny N
    with pytest.raises(LeukolearnError):
        tsne_2d(x[:3])


def test_hidden_features_are_the_models_embedding():
    model = build_model(ModelConfig(input_size=190), init="torch", seed=0)
    images = np.random.default_rng(0).integers(0, 256, (3, 190, 190, 3), dtype=np.uint8)
    feats = hidden_features(model, images, batch_size=2)
    assert feats.shape == (3, 32) and feats.dtype == np.float32 and (feats >= 0).all()
    with torch.no_grad():
        want = model.embed(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-5, atol=1e-6)


def test_tsne_refuses_identical_features_instead_of_crashing():
    with pytest.raises(LeukolearnError, match="dead network"):
        tsne_2d(np.ones((20, 32)))
