"""Figures of what the networks look at and how they represent cells: the Fig 4b grid of
saliency and LRP maps, the Fig 5 tSNE panels, and curves over training size with the
spread over folds (hidden-layer separation, relevance shares, shortcut control).

Same conventions as `report.figures`: functions take arrays, return a matplotlib Figure
built without pyplot, fonts of at least 9 pt, Okabe-Ito colours; save with `save_figure`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from leukolearn.analysis.metrics import METRIC_LABELS
from leukolearn.report.style import COLORS, DOUBLE_COLUMN_IN, RC, SINGLE_COLUMN_IN, new_figure

# One colour per class / region / variant, Okabe-Ito.
CLASS_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
                "0.3")
REGION_COLORS = {"background": "0.45", "cytoplasm": "#56B4E9", "nucleus": "#CC79A7"}
VARIANT_COLORS = {"original": "0.15", "cell-only": "#009E73", "background-only": "#D55E00"}


# --------------------------------------------------------------------------- Fig 4b
def explain_figure(grid, *, title: str | None = None) -> Figure:
    """Rows: images; first column the image, then per training size its saliency map
    (|gradient|, grey: bright = relevant) and its LRP map (bwr, symmetric: red for, blue
    against the predicted class). Each map has its own scale, up to its 99.5th percentile
    of |value| (a few hot pixels would otherwise leave the rest invisible); a model whose
    map is zero everywhere (a dead network) says so. `grid`: `explain.measures.ExplainGrid`."""
    n_rows, n_sizes = len(grid.image_ids), len(grid.sizes)
    panel = 0.78
    with mpl.rc_context(RC):
        fig = Figure(figsize=(panel * (1 + 2 * n_sizes) + 1.0, panel * 1.28 * n_rows + 1.0),
                     layout="constrained")
        fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
        subfigs = fig.subfigures(1, 1 + n_sizes, width_ratios=[1] + [2] * n_sizes, wspace=0.03)
        axes = subfigs[0].subplots(n_rows, 1, squeeze=False)[:, 0]
        subfigs[0].suptitle("image\n", fontsize=9)
        for r, ax in enumerate(axes):
            ax.imshow(grid.images[r])
            _bare(ax)
            ax.set_ylabel(f"{grid.image_ids[r]}\n{grid.types[r]}", fontsize=9)
        for s in range(n_sizes):
            sub = subfigs[1 + s]
            sub.suptitle(f"n = {grid.sizes[s]}\n{grid.metrics[s]}", fontsize=9)
            pair = sub.subplots(n_rows, 2, squeeze=False)
            for r in range(n_rows):
                sal, rel = grid.saliency[s, r], grid.lrp[s, r]
                top = _scale(sal)
                pair[r, 0].imshow(np.clip(sal / top, 0, 1), cmap="gray", vmin=0, vmax=1)
                m = _scale(rel)
                pair[r, 1].imshow(rel, cmap="bwr", vmin=-m, vmax=m)
                for ax, a in zip(pair[r], (sal, rel)):
                    _bare(ax)
                    if not np.any(a):
                        ax.text(0.5, 0.5, "zero\neverywhere", ha="center", va="center",
                                fontsize=9, color="0.5", transform=ax.transAxes)
                pair[r, 0].set_xlabel(f"→ {grid.predicted[s][r]} {grid.confidence[s, r]:.2f}",
                                      fontsize=9, loc="left")
                if r == 0:
                    pair[r, 0].set_title("SAL", fontsize=9)
                    pair[r, 1].set_title("LRP", fontsize=9)
        fig.suptitle(title or f"Fold {grid.fold}: saliency (bright = relevant) and LRP "
                     f"({grid.rule}; red for, blue against the predicted class)", fontsize=10)
    return fig


def _scale(a: np.ndarray) -> float:
    """The 99.5th percentile of |a| (its max if that is 0; 1 for an all-zero map)."""
    a = np.abs(a)
    return float(np.percentile(a, 99.5)) or float(a.max()) or 1.0


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# --------------------------------------------------------------------------- Fig 5
def tsne_figure(panels: Sequence, class_names: Sequence[str], *, title: str | None = None
                ) -> Figure:
    """One tSNE panel per model (`explain.measures.EmbedPanel`), points coloured by class;
    the fold's test images are ringed, the others were left out of that training set."""
    n = len(panels)
    with mpl.rc_context(RC):
        fig = new_figure(min(DOUBLE_COLUMN_IN, 0.3 + 2.3 * n), 2.9)
        axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
        for ax, p in zip(axes, panels):
            for k, name in enumerate(class_names):
                sel = p.labels == k
                ax.scatter(p.xy[sel, 0], p.xy[sel, 1], s=9, color=CLASS_COLORS[k % 8],
                           alpha=0.8, lw=0, label=name)
                ring = sel & p.is_test
                ax.scatter(p.xy[ring, 0], p.xy[ring, 1], s=22, facecolor="none",
                           edgecolor="black", lw=0.6)
            _bare(ax)
            sep = p.separation
            if sep.get("dead"):
                ax.text(0.5, 0.5, "dead network:\nall images at\none point", ha="center",
                        va="center", fontsize=9, color="0.4", transform=ax.transAxes)
            ax.set_title(f"n = {p.size} ({len(p.labels)} images)\nkNN {sep['knn_accuracy']:.2f}"
                         f", silhouette {sep['silhouette']:.2f}", fontsize=9)
        handles = [Patch(color=CLASS_COLORS[k % 8], label=c) for k, c in enumerate(class_names)]
        handles.append(Line2D([], [], marker="o", ls="none", mfc="none", mec="black",
                              label="test image"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4))
        if title:
            fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------- curves
def draw_spread(ax, sizes: np.ndarray, values: np.ndarray, *, color, label: str,
                points: bool = True) -> None:
    """Median over folds per training size as a line, the interquartile range as a band,
    and (with `points`) every fold as a small dot. NaN values are left out."""
    sizes, values = np.asarray(sizes, float), np.asarray(values, float)
    xs = np.unique(sizes)
    stats = []
    for x in xs:
        v = values[(sizes == x) & np.isfinite(values)]
        stats.append(np.percentile(v, [25, 50, 75]) if len(v) else [np.nan] * 3)
    q1, med, q3 = np.array(stats).T if len(stats) else ([], [], [])
    ax.fill_between(xs, q1, q3, color=color, alpha=0.2, lw=0)
    ax.plot(xs, med, color=color, marker="o", ms=3.5, label=label)
    if points:
        ax.scatter(sizes, values, s=6, color=color, alpha=0.45, lw=0)


def size_ticks(ax, sizes) -> None:
    """A tick at each training size when there are few (matplotlib would put one size
    among ticks 48, 49, 50 ...)."""
    xs = np.unique(np.asarray(sizes, float)[np.isfinite(np.asarray(sizes, float))])
    if 0 < len(xs) <= 12:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        if len(xs) == 1:
            ax.set_xlim(xs[0] - 1, xs[0] + 1)


def separation_figure(sizes: Sequence[int], silhouette: Sequence[float],
                      knn: Sequence[float], chance: Sequence[float],
                      dead: Sequence[float] | None = None, *,
                      title: str | None = None) -> Figure:
    """Hidden-layer separation of every model vs its training size: silhouette (left) and
    leave-one-out kNN accuracy (right), median + IQR band over folds. Dead networks (one
    hidden vector for every image; counted as no separation) are marked with a cross."""
    with mpl.rc_context(RC):
        fig = new_figure(DOUBLE_COLUMN_IN, 2.8)
        ax1, ax2 = fig.subplots(1, 2)
        draw_spread(ax1, sizes, silhouette, color=COLORS["ours"], label="median, IQR")
        ax1.axhline(0, ls="--", lw=1.0, color=COLORS["chance"])
        ax1.set_ylabel("Silhouette (32-d hidden layer)")
        draw_spread(ax2, sizes, knn, color=COLORS["ours"], label="median, IQR")
        if len(chance):
            ax2.axhline(float(np.nanmedian(chance)), ls="--", lw=1.0, color=COLORS["chance"],
                        label="majority class")
        ax2.set_ylabel("kNN accuracy (leave one out)")
        if dead is not None and np.nansum(dead) > 0:
            d = np.asarray(dead, float) == 1
            for ax, v in ((ax1, silhouette), (ax2, knn)):
                ax.scatter(np.asarray(sizes)[d], np.asarray(v)[d], marker="x", s=22,
                           color=COLORS["paper"], zorder=4, label="dead network")
        for ax in (ax1, ax2):
            size_ticks(ax, sizes)
            ax.set_xlabel("Number of training images")
            ax.grid(axis="y", lw=0.5, color="0.88")
        ax2.legend(loc="best")
        fig.suptitle(title or "Class separation on images the model did not train on",
                     fontsize=10)
    return fig


def focus_figure(sizes: Sequence[int], shares: Mapping[str, Sequence[float]],
                 areas: Mapping[str, Sequence[float]] | None = None, *,
                 title: str | None = None) -> Figure:
    """Share of positive LRP relevance on each region vs training size (median + IQR band
    over folds); dotted: the region's share of the pixels (median), what a map that
    looked everywhere alike would give."""
    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN + 0.6, 2.9)
        ax = fig.add_subplot()
        for region, values in shares.items():
            color = REGION_COLORS.get(region, "0.3")
            draw_spread(ax, sizes, values, color=color, label=region)
            if areas is not None and np.isfinite(areas[region]).any():
                ax.axhline(float(np.nanmedian(areas[region])), color=color, ls=":", lw=1.0)
        if areas is not None:
            ax.plot([], [], ls=":", color="0.3", lw=1.0, label="share of pixels")
        size_ticks(ax, sizes)
        ax.set_ylim(0, 1)
        ax.set_xlabel("Number of training images")
        ax.set_ylabel("Share of positive relevance")
        ax.grid(axis="y", lw=0.5, color="0.88")
        ax.legend(loc="best")
        if title:
            ax.set_title(title, fontsize=9)
    return fig


def shortcut_figure(variants: Mapping[str, tuple[Sequence[int], Sequence[float]]], *,
                    metric_name: str = METRIC_LABELS["auc"], chance_level: float | None = 0.5,
                    title: str | None = None) -> Figure:
    """The metric vs training size for the original images, the cell alone and the
    background alone (median + IQR band over folds)."""
    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN + 1.8, 2.9)
        ax = fig.add_subplot()
        if chance_level is not None:
            ax.axhline(chance_level, ls="--", lw=1.0, color=COLORS["chance"], zorder=0)
        for name, (sizes, values) in variants.items():
            draw_spread(ax, sizes, values, color=VARIANT_COLORS.get(name, "0.3"), label=name)
        size_ticks(ax, [s for sizes, _ in variants.values() for s in sizes])
        ax.set_xlabel("Number of training images")
        ax.set_ylabel(metric_name)
        ax.grid(axis="y", lw=0.5, color="0.88")
        # Outside the axes: dead networks sit at 0.5, where a corner legend would hide them.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title(title or "Shortcut control", fontsize=9)
    return fig


def variant_examples_figure(examples: Mapping[str, np.ndarray], row_labels: Sequence[str], *,
                            title: str | None = None) -> Figure:
    """What each shortcut variant shows the network: columns are variants (original,
    cell-only, background-only), rows one example image per class."""
    names = list(examples)
    n_rows = len(row_labels)
    with mpl.rc_context(RC):
        fig = new_figure(1.6 * len(names) + 0.6, 1.6 * n_rows + 0.4)
        axes = fig.subplots(n_rows, len(names), squeeze=False)
        for c, name in enumerate(names):
            for r in range(n_rows):
                ax = axes[r, c]
                ax.imshow(examples[name][r])
                _bare(ax)
                if r == 0:
                    ax.set_title(name, fontsize=9)
                if c == 0:
                    ax.set_ylabel(row_labels[r], fontsize=9)
        if title:
            fig.suptitle(title, fontsize=9)
    return fig
