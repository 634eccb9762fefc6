"""Figures of the analyses: the learning curve behind `plan`, the reliability diagram, and
several methods side by side over training size (`leukolearn compare`)."""
from __future__ import annotations

import math

from typing import Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from leukolearn.analysis.calibration import ReliabilityCurve
from leukolearn.analysis.curves import LearningCurvePlan
from leukolearn.analysis.metrics import metric_label
from leukolearn.report.style import COLORS, RC, SINGLE_COLUMN_IN, new_figure


def learning_curve_figure(plan: LearningCurvePlan, *, title: str | None = None) -> Figure:
    """Measured points (folds grey, mean blue), the fitted curve with its bootstrap band,
    the target line and the predicted size; sizes held out of the fit are hollow."""
    name = metric_label(plan.metric_name)
    right = float(plan.sizes.max())
    if math.isfinite(plan.n_needed):
        right = max(right, min(plan.n_needed * 1.3, right * 20))
    grid = np.geomspace(max(1.0, plan.sizes.min() * 0.8), right * 1.05, 200)
    low, high = plan.band(grid)
    in_fit = np.isin(plan.sizes, plan.fit_sizes)
    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN * 1.3, 3.0)
        ax = fig.add_subplot()
        for j in range(plan.values.shape[1]):
            ax.plot(plan.sizes, plan.values[:, j], ".", color=COLORS["fold"], ms=4, zorder=1)
        ax.fill_between(grid, low, high, color=COLORS["ours"], alpha=0.2, lw=0,
                        label=f"{plan.confidence:.0%} band (bootstrap over folds)")
        f = plan.fit
        ax.plot(grid, f(grid), color=COLORS["ours"],
                label=f"Fit: {f.a:.3f} - {f.b:.2g}·n$^{{-{f.c:.2g}}}$")
        ax.plot(plan.sizes[in_fit], plan.mean[in_fit], "o", color=COLORS["ours"], ms=5,
                label="Measured mean (fitted)")
        if (~in_fit).any():
            ax.plot(plan.sizes[~in_fit], plan.mean[~in_fit], "o", mfc="white", color=COLORS["ours"],
                    ms=5, label="Measured mean (held out)")
        ax.axhline(plan.target, ls="--", lw=1.0, color=COLORS["paper"], label=f"Target {plan.target:g}")
        if math.isfinite(plan.n_needed):
            ax.axvline(plan.n_needed, ls=":", lw=1.0, color=COLORS["paper"])
            ax.annotate(f"n ≈ {math.ceil(plan.n_needed):,}", (plan.n_needed, plan.target),
                        xytext=(4, -12), textcoords="offset points", color=COLORS["paper"])
        ax.set_xscale("log")
        ax.set_xlabel("Training images")
        ax.set_ylabel(f"Test {name}")
        ax.legend(loc="lower right", fontsize=8)
        if title:
            ax.set_title(title)
    return fig


def reliability_diagram(curve: ReliabilityCurve, *, title: str | None = None,
                        label: str = "Model", positive: str = "blast") -> Figure:
    """Observed fraction of `positive` cells (the positive class's name: "blast", "ig")
    against mean predicted probability per bin (top), with the number of cells per bin
    (bottom); the diagonal is perfect calibration."""
    filled = curve.counts > 0
    centres = (curve.bin_edges[:-1] + curve.bin_edges[1:]) / 2
    widths = np.diff(curve.bin_edges)
    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN, 3.8)
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.plot([0, 1], [0, 1], ls="--", lw=1.0, color=COLORS["chance"], label="Perfectly calibrated")
        top.plot(curve.mean_predicted[filled], curve.observed[filled], "o-", color=COLORS["ours"],
                 label=f"{label} (ECE = {curve.ece:.3f})", clip_on=False, zorder=3)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel(f"Observed fraction of {positive} cells")
        top.legend(loc="upper left")
        if title:
            top.set_title(title)
        bottom.bar(centres, curve.counts, width=widths * 0.9, color=COLORS["fold"])
        bottom.set_xlabel(f"Predicted {positive} probability")
        bottom.set_ylabel("Cells")
    return fig


METHOD_COLORS = ("0.15", COLORS["ours"], "#009E73", COLORS["paper"], COLORS["val"], "#CC79A7",
                 "#56B4E9", "#F0E442")


def methods_figure(series: dict[str, tuple[Sequence[int], Sequence[float]]], *,
                   metric_name: str, chance_level: float | None = None,
                   title: str | None = None) -> Figure:
    """Fig 4a with several methods side by side: per method the median over folds per
    training size (line), the interquartile range (band) and every fold (dots);
    `series`: method -> (size of each job, metric of each job)."""
    from leukolearn.report.explain_figures import draw_spread, size_ticks

    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN + 2.2, 3.0)
        ax = fig.add_subplot()
        if chance_level is not None:
            ax.axhline(chance_level, ls="--", lw=1.0, color=COLORS["chance"], zorder=0)
        for k, (name, (sizes, values)) in enumerate(series.items()):
            draw_spread(ax, np.asarray(sizes), np.asarray(values, dtype=float),
                        color=METHOD_COLORS[k % len(METHOD_COLORS)], label=name)
        size_ticks(ax, [s for sizes, _ in series.values() for s in sizes])
        ax.set_xlabel("Number of training images")
        ax.set_ylabel(metric_name)
        ax.grid(axis="y", lw=0.5, color="0.88")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if title:
            ax.set_title(title, fontsize=9)
    return fig
