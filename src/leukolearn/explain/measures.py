"""What `leukolearn explain / embed / focus` compute from a run: arrays for the figures
(Fig 4b grid, Fig 5 tSNE panels) and per-job tables over the whole run (separation of
the hidden layer, relevance shares on nucleus / cytoplasm / background).

Every model explains the pre-softmax score of its predicted class (the paper's "final
prediction"); nothing here trains or changes a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.explain.runs import JobTable, fold_jobs, job_model, per_job_table, unseen_indices
from leukolearn.runstore.store import RunStore

JOB_COLUMNS = ("job_id", "fold", "size", "replicate", "finished_at")
SEPARATION_COLUMNS = JOB_COLUMNS + ("n_images", "silhouette", "knn_accuracy", "chance", "k",
                                    "dead")
# The LRP rule of Fig 4b and of `focus` (the paper's; explain.lrp's default): named here,
# where the CLI can read it without importing torch.
DEFAULT_RULE = "epsilon"
FOCUS_COLUMNS = JOB_COLUMNS + ("masks", "rule", "n_images", "n_without_positive",
                               "background", "cytoplasm", "nucleus",
                               "area_background", "area_cytoplasm", "area_nucleus")
EMBED_LIMIT = 2000  # images per model at most (AML: 17,000 unseen); the test set always in


@dataclass(frozen=True)
class ExplainGrid:
    """Fig 4b: R images explained by S models (one fold, S training sizes)."""

    image_ids: list[str]
    types: list[str]  # (R,) cell type / class shown per row
    images: np.ndarray  # (R, H, W, 3) uint8
    sizes: list[int]  # (S,)
    job_ids: list[str]
    saliency: np.ndarray  # (S, R, H, W) >= 0
    lrp: np.ndarray  # (S, R, H, W) signed
    predicted: list[list[str]]  # (S, R) predicted class name
    confidence: np.ndarray  # (S, R) softmax probability of the predicted class
    rule: str
    fold: int
    metrics: list[str]  # (S,) each model's test metric, e.g. "AUC 0.97"


def explain_grid(store: RunStore, cells: CellImages, fold: int, sizes: Sequence[int],
                 rows: Sequence[int], types: Sequence[str] | None = None,
                 rule: str = DEFAULT_RULE) -> tuple[ExplainGrid, list[str]]:
    """Saliency and LRP (`rule`) of images `rows` (indices into `cells`) under the fold's
    models nearest `sizes`; returns the grid and notes for the user (sizes replaced).
    `types`: each image's cell type as the figure labels it (`runs.cell_types`); default
    its class name."""
    from leukolearn.explain.saliency import saliency
    from leukolearn.explain.lrp import get_rule, lrp
    from leukolearn.analysis.metrics import metric_label
    from leukolearn.training.loop import predict_proba

    get_rule(rule)  # an unknown rule fails before any work
    if types is None:
        types = [cells.class_names[k] for k in cells.labels]
    jobs, notes = fold_jobs(store, fold, sizes)
    images = cells.images[np.asarray(rows)]
    sal, rel, predicted, conf = [], [], [], []
    for job in jobs:
        model = job_model(store, job)
        sal.append(saliency(model, images).maps)
        attribution = lrp(model, images, rule=rule)
        rel.append(attribution.maps)
        probs = predict_proba(model, images)
        predicted.append([cells.class_names[t] for t in attribution.target])
        conf.append(probs[np.arange(len(rows)), attribution.target])
    grid = ExplainGrid(
        image_ids=[cells.image_ids[i] for i in rows], types=[types[i] for i in rows],
        images=images, sizes=[j.size for j in jobs], job_ids=[j.job_id for j in jobs],
        saliency=np.stack(sal), lrp=np.stack(rel), predicted=predicted,
        confidence=np.stack(conf), rule=rule, fold=fold,
        metrics=[f"{metric_label(j.metric_name)} {j.metric:.2f}"
                 for j in jobs])
    return grid, notes


@dataclass(frozen=True)
class EmbedPanel:
    """Fig 5: the tSNE map of one model's hidden layer on images it never fitted."""

    size: int
    job_id: str
    xy: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,)
    is_test: np.ndarray  # (N,) bool: the fold's test images (the rest: left out of training)
    separation: dict

    @property
    def dead(self) -> bool:
        return bool(self.separation["dead"])


def embed_panels(store: RunStore, cells: CellImages, fold: int, sizes: Sequence[int],
                 seed: int = 0) -> tuple[list[EmbedPanel], list[str]]:
    from leukolearn.explain.embed import hidden_features, tsne_2d

    jobs, notes = fold_jobs(store, fold, sizes)
    panels = []
    for job in jobs:
        idx = unseen_indices(store, job.job_id, len(cells), limit=EMBED_LIMIT, seed=seed)
        feats = hidden_features(job_model(store, job), cells.images[idx])
        test = np.isin(idx, store.split(job.job_id)[2])
        sep = hidden_separation(feats, cells.labels[idx])
        # tSNE of identical points crashes scikit-learn (segfault): nothing to map anyway
        xy = np.zeros((len(idx), 2), np.float32) if sep["dead"] else tsne_2d(feats, seed=seed)
        panels.append(EmbedPanel(job.size, job.job_id, xy, cells.labels[idx], test, sep))
        if sep["dead"]:
            notes.append(f"{job.job_id}: every image has the same hidden vector (a dead "
                         "network); its panel is empty")
    return panels, notes


def hidden_separation(features: np.ndarray, labels: np.ndarray) -> dict:
    """`embed.separation`, plus dead = 1 when every image has the same hidden vector (a
    dead ReLU network): then silhouette 0 and kNN accuracy = chance (no class information;
    the neighbour order among identical points would be arbitrary)."""
    from leukolearn.explain.embed import separation

    if len(features) and np.ptp(features, axis=0).max() == 0:
        chance = float(np.bincount(np.unique(labels, return_inverse=True)[1]).max() / len(labels))
        return {"silhouette": 0.0, "knn_accuracy": chance, "chance": chance,
                "k": min(5, len(labels) - 1), "n": len(labels), "dead": 1}
    return {**separation(features, labels), "dead": 0}


def separation_table(store: RunStore, cells: CellImages, path: Path, *,
                     progress: bool = True) -> JobTable:
    """Silhouette and leave-one-out kNN accuracy of every finished job's 32-d hidden
    layer on the images it never fitted (`unseen_indices`); one CSV row per job."""
    from leukolearn.explain.embed import hidden_features

    def measure(job):
        idx = unseen_indices(store, job.job_id, len(cells), limit=EMBED_LIMIT)
        feats = hidden_features(job_model(store, job), cells.images[idx])
        return {"n_images": len(idx), **hidden_separation(feats, cells.labels[idx])}

    return per_job_table(store.results(), path, SEPARATION_COLUMNS, measure,
                         same={}, progress=progress,
                         what="hidden-layer separation")


def focus_table(store: RunStore, cells: CellImages, masks: np.ndarray, masks_label: str,
                path: Path, *, rule: str = DEFAULT_RULE, progress: bool = True) -> JobTable:
    """Share of positive LRP relevance on background / cytoplasm / nucleus, averaged over
    each job's test images (images without positive relevance left out), and each region's
    share of the pixels (area_*: the shares of a map that looks everywhere alike); one row
    per job.

    masks (N, H, W) region codes for every image of `cells`; `masks_label` names their
    source in the CSV, so rows made with other masks are measured again."""
    from leukolearn.explain.focus import REGIONS, relevance_shares
    from leukolearn.explain.lrp import lrp

    if masks.shape != cells.images.shape[:3]:
        raise LeukolearnError(f"masks {masks.shape} do not match images {cells.images.shape}")

    def measure(job):
        test = store.split(job.job_id)[2]
        maps = lrp(job_model(store, job), cells.images[test], rule=rule).maps
        shares = relevance_shares(maps, masks[test])  # (n, 3), NaN rows: nothing positive
        ok = np.isfinite(shares).all(1)
        mean = shares[ok].mean(0) if ok.any() else np.full(3, np.nan)
        # what the shares would be if relevance were spread evenly over the pixels
        area = relevance_shares(np.ones(maps.shape), masks[test]).mean(0)
        return {"n_images": len(test), "n_without_positive": int((~ok).sum()),
                **dict(zip(REGIONS, mean)), **{f"area_{r}": a for r, a in zip(REGIONS, area)}}

    return per_job_table(store.results(), path, FOCUS_COLUMNS, measure,
                         same={"masks": masks_label, "rule": rule}, progress=progress,
                         what="LRP relevance shares")
