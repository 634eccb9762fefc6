"""The figure of an external validation (`leukolearn evaluate`): ROC curve, reliability
diagram, and the share of each cell type called positive.

It takes a `predict.evaluate.Evaluation` by its attributes (report/ sits below predict/):
`is_positive`, `score`, `auc`, `auc_ci`, `reliability`, `per_type` (name -> Rate with
k, n, value, low, high), `positive_data`, `positive_model`, `threshold`, `confidence`,
`sensitivity`, `specificity`.
"""
from __future__ import annotations

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from leukolearn.report.style import COLORS, RC, SINGLE_COLUMN_IN, new_figure


def evaluation_figure(ev, *, title: str | None = None) -> Figure:
    """Three panels: (a) ROC with the AUC and its interval and the operating point at the
    threshold, (b) reliability, (c) the fraction called positive per cell type with its
    Wilson interval (false-positive rates for the negative types)."""
    positive = "+".join(ev.positive_model) or "positive"
    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN * 3, 3.2)
        roc_ax, rel_ax, type_ax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.4]})
        _roc(roc_ax, ev)
        _reliability(rel_ax, ev, positive)
        _per_type(type_ax, ev, positive)
        if title:
            fig.suptitle(title)
    return fig


def _roc(ax, ev) -> None:
    from sklearn.metrics import roc_curve

    ax.plot([0, 1], [0, 1], ls="--", lw=1.0, color=COLORS["chance"], label="Chance")
    y = np.asarray(ev.is_positive)
    if y.any() and (~y).any():
        fpr, tpr, _ = roc_curve(y, ev.score)
        low, high = ev.auc_ci
        ax.plot(fpr, tpr, color=COLORS["ours"],
                label=f"AUC {ev.auc:.3f} ({ev.confidence:.0%} CI {low:.3f}-{high:.3f})")
        if ev.sensitivity is not None and ev.specificity is not None:
            ax.plot(1 - ev.specificity.value, ev.sensitivity.value, "o", color=COLORS["paper"],
                    label=f"threshold {ev.threshold.value:.3g}")
        ax.legend(loc="lower right", fontsize=7)
    else:
        _none(ax, "no ROC")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False-positive rate")
    ax.set_ylabel("True-positive rate")
    ax.set_title("a  ROC", loc="left")


def _reliability(ax, ev, positive: str) -> None:
    curve = ev.reliability
    ax.plot([0, 1], [0, 1], ls="--", lw=1.0, color=COLORS["chance"])
    if curve is not None and (curve.counts > 0).any():
        filled = curve.counts > 0
        ax.plot(curve.mean_predicted[filled], curve.observed[filled], "o-",
                color=COLORS["ours"], label=f"ECE {curve.ece:.3f}", clip_on=False)
        ax.legend(loc="upper left", fontsize=7)
    else:
        _none(ax, "no calibration curve")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"Predicted {positive} probability")
    ax.set_ylabel(f"Observed fraction of {positive}")
    ax.set_title("b  Reliability", loc="left")


def _none(ax, what: str) -> None:
    """The panel's note where its curve needs both classes and the cells hold one."""
    ax.text(0.5, 0.5, f"{what}:\nthe cells hold one class only", ha="center", va="center",
            transform=ax.transAxes, color=COLORS["chance"])


def _per_type(ax, ev, positive: str) -> None:
    names = list(ev.per_type)
    if not names:
        ax.set_axis_off()
        return
    rates = [ev.per_type[n] for n in names]
    values = np.array([r.value for r in rates])
    err = np.array([[r.value - r.low for r in rates], [r.high - r.value for r in rates]])
    colors = [COLORS["paper"] if n in ev.positive_data else COLORS["ours"] for n in names]
    pos = np.arange(len(names))
    ax.barh(pos, values, xerr=err, color=colors, error_kw={"lw": 0.8, "capsize": 2})
    ax.set_yticks(pos, [f"{n} ({r.n})" for n, r in zip(names, rates)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"Called {positive} (threshold {ev.threshold.value:.3g})"
                  if ev.threshold is not None else f"Called {positive}")
    ax.set_title("c  Called positive per cell type", loc="left")
    ax.text(1.0, -0.22, "vermillion: the positive classes (sensitivity); blue: false positives",
            ha="right", transform=ax.transAxes, fontsize=6, color=COLORS["chance"])
