"""The 32-d last hidden layer, its tSNE map (paper Fig 5) and numbers for how well it
separates the classes, so "clearer separation with more training images" can be measured
rather than read off a scatter plot.

Embed images the network did not train on (the paper: the fold's test images plus every
image left out of that training set); the caller picks them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from leukolearn.errors import LeukolearnError
from leukolearn.explain.saliency import as_input, eval_mode


def hidden_features(model: nn.Module, images: np.ndarray | torch.Tensor,
                    batch_size: int = 64) -> np.ndarray:
    """(N, hidden) float32: `model.embed` (after its ReLU) of uint8 (N, H, W, 3) images."""
    out = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = as_input(images[start:start + batch_size], model)  # (B, 3, H, W)
            out.append(model.embed(x).float().cpu().numpy())  # (B, hidden)
    if not out:
        raise LeukolearnError("no images to embed")
    return np.concatenate(out)


def tsne_2d(features: np.ndarray, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """(N, 2) tSNE map, the same for the same seed. Perplexity defaults to
    min(30, (N - 1) / 3): scikit-learn's 30 needs N > 90, and the paper embedded 125-215."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    if n < 4:
        raise LeukolearnError(f"tSNE needs at least 4 images, got {n}")
    if np.ptp(features, axis=0).max() == 0:
        # scikit-learn's TSNE crashes the interpreter on identical points (a dead network)
        raise LeukolearnError("every image has the same features (a dead network): "
                              "nothing to embed")
    perplexity = min(30.0, (n - 1) / 3) if perplexity is None else perplexity
    # PCA initialisation: stable layouts and less dependence on the seed than random init
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto")
    return tsne.fit_transform(features).astype(np.float32)


def separation(features: np.ndarray, labels: np.ndarray, k: int = 5) -> dict:
    """How well the classes separate in the feature space itself (not in the tSNE map).

    silhouette: mean silhouette width, euclidean (-1..1; NaN with one class or one image
        per class).
    knn_accuracy: leave-one-out accuracy of a k-nearest-neighbour vote (a tie is broken
        in favour of the nearest neighbour's class).
    chance: the accuracy of always voting for the most common class, for comparison.
    """
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n = len(x)
    if n != len(y) or n < 2:
        raise LeukolearnError(f"need matching features and labels for 2+ images, got {n}/{len(y)}")
    classes, y_idx = np.unique(y, return_inverse=True)
    n_labels = len(classes)
    sil = (float(silhouette_score(x, y_idx)) if 2 <= n_labels <= n - 1 else float("nan"))
    k = min(k, n - 1)
    # k + 1 neighbours, then drop the query itself (not simply the first: duplicates tie)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)  # (N, k + 1), nearest first
    neighbours = np.array([np.delete(row, np.flatnonzero(row == i)[:1])[:k]
                           for i, row in enumerate(idx)])  # (N, k)
    votes = np.zeros((n, n_labels))
    np.add.at(votes, (np.arange(n)[:, None], y_idx[neighbours]), 1.0)
    votes[np.arange(n), y_idx[neighbours[:, 0]]] += 0.5  # tie-break: nearest neighbour wins
    knn = float(np.mean(votes.argmax(1) == y_idx))
    chance = float(np.bincount(y_idx).max() / n)
    return {"silhouette": sil, "knn_accuracy": knn, "chance": chance, "k": k, "n": n}
