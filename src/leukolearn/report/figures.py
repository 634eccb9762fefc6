"""Figures of the paper's panels (Figs 3a, 3b, 4a/6, 7b), drawn from plain arrays.

Every function takes numbers, not a run store, and returns a `matplotlib.figure.Figure` built
without pyplot: nothing enters pyplot's global figure list, so there is nothing to close and
nothing leaks between calls. `save_figure` writes the figure as PNG (200 dpi) and SVG.

Sizes fit a journal column (3.5 in single, 7 in double), every font is at least 9 pt, and colours
come from the Okabe-Ito palette (safe for colour-vision deficiency, readable in greyscale).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from leukolearn.analysis.metrics import METRIC_LABELS
from leukolearn.report.paper_values import PAPER_CITATION
from leukolearn.report.style import COLORS, DOUBLE_COLUMN_IN, RC, SINGLE_COLUMN_IN, new_figure

def _title(parts: Sequence[str | None]) -> str | None:
    kept = [p for p in parts if p]
    return ", ".join(kept) if kept else None


# --------------------------------------------------------------------------- Fig. 3a / 7a
def loss_curves(
    history: Sequence[Mapping[str, float]],
    *,
    fold: int | None = None,
    train_size: int | None = None,
    best_epoch: int | None = None,
    title: str | None = None,
    ylabel: str = "Cross-entropy loss",
) -> Figure:
    """Training and validation loss per epoch, with the kept (lowest val loss) epoch marked.

    history: one dict per epoch with keys "epoch", "train_loss", "val_loss".
    best_epoch: the epoch whose checkpoint was kept; default: the lowest finite val loss.
    The title reads "Fold {fold}, n = {train_size} training images" unless `title` is given.
    """
    if len(history) == 0:
        raise ValueError("loss_curves needs at least one epoch of history")
    missing = {"epoch", "train_loss", "val_loss"} - set(history[0])
    if missing:
        raise ValueError(f"history entries lack keys {sorted(missing)}")
    rows = sorted(history, key=lambda h: h["epoch"])
    epoch = np.array([h["epoch"] for h in rows], dtype=float)
    train = np.array([h["train_loss"] for h in rows], dtype=float)
    val = np.array([h["val_loss"] for h in rows], dtype=float)

    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN, 2.7)
        ax = fig.add_subplot()
        ax.plot(epoch, train, color=COLORS["ours"], label="Training")
        ax.plot(epoch, val, color=COLORS["val"], label="Validation")
        if best_epoch is None and np.isfinite(val).any():
            best_epoch = int(epoch[np.nanargmin(val)])
        if best_epoch is not None:
            i = int(np.argmin(np.abs(epoch - best_epoch)))
            ax.axvline(epoch[i], color=COLORS["paper"], lw=0.8, ls=":", zorder=1)
            ax.plot(epoch[i], val[i], "o", ms=6, mfc="none", mew=1.5, color=COLORS["paper"],
                    label=f"Kept model (epoch {best_epoch})", zorder=3)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.set_xlim(epoch.min(), epoch.max() if epoch.max() > epoch.min() else epoch.min() + 1)
        ax.set_ylim(bottom=0)
        ax.legend(loc="best")
        fold_part = None if fold is None else f"Fold {fold}"
        size_part = None if train_size is None else f"n = {train_size} training images"
        text = title if title is not None else _title([fold_part, size_part])
        if text:
            ax.set_title(text)
    return fig


# --------------------------------------------------------------------------- Fig. 3b
def mean_roc(
    per_fold: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    title: str | None = None,
    n_grid: int = 201,
    show_folds: bool = True,
    ddof: int = 1,
) -> Figure:
    """Mean ROC curve over folds with a ± 1 s.d. band, as in Fig. 3b.

    per_fold: (y_true, p_positive) per fold, y_true in {0, 1} (or bool), 1 = positive class.
    Each fold's ROC is interpolated on a common false-positive-rate grid of `n_grid` points.
    The legend gives the mean ± s.d. (ddof=1: sample s.d.) of the per-fold ROC-AUCs. A fold whose
    test labels hold one class only, or whose scores are not all finite, has no ROC: it is
    skipped, and the legend says how many were.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    grid = np.linspace(0.0, 1.0, n_grid)
    tprs, aucs, skipped = [], [], []
    for k, (y_true, p_pos) in enumerate(per_fold):
        y = np.asarray(y_true).ravel()
        p = np.asarray(p_pos, dtype=float).ravel()
        if y.shape != p.shape:
            raise ValueError(f"fold {k}: {y.size} labels but {p.size} scores")
        positive = y == 1
        if positive.all() or not positive.any():
            skipped.append("one class")
            continue
        if not np.isfinite(p).all():
            skipped.append("NaN scores")
            continue
        fpr, tpr, _ = roc_curve(positive, p)
        tpr_grid = np.interp(grid, fpr, tpr)
        tpr_grid[0] = 0.0
        tprs.append(tpr_grid)
        aucs.append(roc_auc_score(positive, p))

    with mpl.rc_context(RC):
        fig = new_figure(SINGLE_COLUMN_IN, 3.4)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls="--", lw=1.0, color=COLORS["chance"], label="Chance")
        if show_folds:
            for t in tprs:
                ax.plot(grid, t, lw=0.6, color=COLORS["fold"], zorder=1)
        n = len(aucs)
        if n:
            tpr_stack = np.vstack(tprs)  # (n_folds, n_grid)
            mean_tpr = tpr_stack.mean(axis=0)
            mean_auc = float(np.mean(aucs))
            fold_word = "fold" if n == 1 else "folds"
            if n > ddof:
                sd_tpr = tpr_stack.std(axis=0, ddof=ddof)
                sd_auc = float(np.std(aucs, ddof=ddof))
                ax.fill_between(grid, np.clip(mean_tpr - sd_tpr, 0, 1),
                                np.clip(mean_tpr + sd_tpr, 0, 1), color=COLORS["ours"],
                                alpha=0.2, lw=0, label="± 1 s.d.", zorder=2)
                auc_text = f"AUC = {mean_auc:.2f} ± {sd_auc:.2f} (n = {n} {fold_word})"
            else:
                auc_text = f"AUC = {mean_auc:.2f} (n = {n} {fold_word})"
            ax.plot(grid, mean_tpr, color=COLORS["ours"], lw=2.0, zorder=3,
                    label=f"Mean ROC\n{auc_text}")
        # Legend, top to bottom: mean curve, band, single folds, chance, skipped folds.
        handles, labels = ax.get_legend_handles_labels()
        by_label = dict(zip(labels, handles))
        chance = by_label.pop("Chance")
        labels, handles = list(by_label)[::-1], list(by_label.values())[::-1]
        if show_folds and n:
            handles.append(Line2D([], [], lw=0.6, color=COLORS["fold"]))
            labels.append("Single folds")
        handles.append(chance)
        labels.append("Chance")
        for reason in sorted(set(skipped)):
            k = skipped.count(reason)
            handles.append(Line2D([], [], ls="none"))
            labels.append(f"{k} {'fold' if k == 1 else 'folds'} skipped ({reason})")
        if not n:
            ax.text(0.5, 0.55, "no fold has both classes", ha="center", transform=ax.transAxes)
        ax.legend(handles, labels, loc="lower right", handlelength=1.5, frameon=True,
                  framealpha=0.9, edgecolor="none")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (1 − specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        if title:
            ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- Figs 4a, 6
def auc_vs_size(
    sizes: Sequence[int],
    values: Sequence[np.ndarray],
    *,
    metric_name: str = METRIC_LABELS["auc"],
    paper: Mapping[int, tuple[float, float]] | None = None,
    degenerate: Sequence[int] | None = None,
    chance_level: float | None = None,
    label: str = "This reproduction",
    title: str | None = None,
) -> Figure:
    """Box plot of a metric per training-set size over folds, as in Figs 4a and 6.

    values[i]: the metric of every fold at sizes[i]; NaN (a run without a score) is left out of
    the box and counted above the plot. Boxes show the median and the 2nd and 3rd quartiles,
    whiskers the furthest points within 1.5 IQR, dots the points beyond (as in the paper).
    degenerate[i]: optional count of runs at sizes[i] flagged as degenerate (for example constant
    predictions) that are still in the box; counted above the plot too.
    paper: training size -> (mean, s.d.) reported by the paper, drawn beside the box of that size;
    sizes absent from `sizes` are not drawn.
    chance_level: a dashed line at this value (0.5 for ROC-AUC), none by default.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) != len(values):
        raise ValueError(f"{len(sizes)} sizes but {len(values)} value arrays")
    if len(sizes) == 0:
        raise ValueError("auc_vs_size needs at least one training size")
    if degenerate is not None and len(degenerate) != len(sizes):
        raise ValueError(f"{len(sizes)} sizes but {len(degenerate)} degenerate counts")
    arrays = [np.asarray(v, dtype=float).ravel() for v in values]
    finite = [a[np.isfinite(a)] for a in arrays]
    n_nan = [int(a.size - f.size) for a, f in zip(arrays, finite)]
    positions = np.arange(1, len(sizes) + 1)

    width = float(np.clip(1.3 + 0.3 * len(sizes), SINGLE_COLUMN_IN, DOUBLE_COLUMN_IN))
    with mpl.rc_context(RC):
        fig = new_figure(width, 3.0)
        ax = fig.add_subplot()
        if chance_level is not None:
            ax.axhline(chance_level, ls="--", lw=1.0, color=COLORS["chance"], zorder=0)
        c = COLORS["ours"]
        bp = ax.boxplot(
            finite,
            positions=positions,
            widths=0.5,
            whis=1.5,
            patch_artist=True,
            manage_ticks=False,
            boxprops=dict(facecolor=mpl.colors.to_rgba(c, 0.25), edgecolor=c, lw=1.0),
            medianprops=dict(color=c, lw=1.8),
            whiskerprops=dict(color=c, lw=1.0),
            capprops=dict(color=c, lw=1.0),
            flierprops=dict(marker="o", ms=3.5, mfc=c, mec="none", alpha=0.8),
        )
        for box, size in zip(bp["boxes"], sizes):
            box.set_gid(f"box-{size}")
        handles = [Patch(facecolor=mpl.colors.to_rgba(c, 0.25), edgecolor=c,
                         label=f"{label} (median, IQR)")]

        if paper:
            pos_of = dict(zip(sizes, positions))
            shown = sorted(s for s in paper if s in pos_of)
            if shown:
                x = np.array([pos_of[s] for s in shown], dtype=float) + 0.38
                mean = np.array([paper[s][0] for s in shown])
                sd = np.array([paper[s][1] for s in shown])
                ax.errorbar(x, mean, yerr=sd, fmt="D", ms=5, color=COLORS["paper"],
                            ecolor=COLORS["paper"], elinewidth=1.2, capsize=2.5, zorder=4)
                handles.append(Line2D([], [], marker="D", ms=5, ls="none", color=COLORS["paper"],
                                      label=f"{PAPER_CITATION} (mean ± s.d.)"))

        # Counts of NaN / degenerate runs, one row each, just above the plotting area.
        rows = [("NaN runs", n_nan)]
        if degenerate is not None:
            rows.append(("degenerate", [int(d) for d in degenerate]))
        rows = [(name, counts) for name, counts in rows if any(counts)]
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        for r, (name, counts) in enumerate(rows):
            y = 1.02 + 0.075 * (len(rows) - 1 - r)
            ax.text(0.3, y, name + ":", transform=trans, ha="right", va="bottom", fontsize=9,
                    color="0.3")
            for p, k in zip(positions, counts):
                ax.text(p, y, str(k) if k else "–", transform=trans, ha="center", va="bottom",
                        fontsize=9, color=COLORS["paper"] if k else "0.75")

        ax.set_xticks(positions, [str(s) for s in sizes])
        ax.set_xlim(0.4, len(sizes) + 0.75)
        lo, hi = ax.get_ylim()
        all_vals = np.concatenate(finite + [np.array([chance_level or np.nan])])
        if np.isfinite(all_vals).any() and np.nanmax(all_vals) <= 1.0:
            ax.set_ylim(lo, min(hi, 1.02))
        ax.set_xlabel("Number of training images")
        ax.set_ylabel(metric_name)
        ax.grid(axis="y", lw=0.5, color="0.88", zorder=0)
        ax.set_axisbelow(True)
        # Below the axes: low outliers (dead networks at 0.5) sit where a corner legend would.
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  ncol=len(handles))
        if title:
            ax.set_title(title, pad=6 + 12 * len(rows))
    return fig


# --------------------------------------------------------------------------- Fig. 7b
def confusion_matrix_percent(
    counts: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str | None = None,
    cmap: str = "Blues",
) -> Figure:
    """Row-normalised confusion matrix in percent, with images per true class on the right.

    counts[i, j]: number of test images of true class i predicted as class j (summed over folds).
    Each cell shows the percentage of its row; a class without images shows "–".
    """
    counts = np.asarray(counts, dtype=float)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"counts has shape {counts.shape}, expected ({n}, {n}) for {n} classes")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("counts must be finite and non-negative")
    row_total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100.0 * counts / row_total[:, None]

    side = float(np.clip(1.8 + 0.5 * n, SINGLE_COLUMN_IN, DOUBLE_COLUMN_IN))
    with mpl.rc_context(RC):
        fig = new_figure(side + 0.4, side)
        ax = fig.add_subplot()
        cm = mpl.colormaps[cmap]
        ax.imshow(np.nan_to_num(pct, nan=0.0), cmap=cm, vmin=0, vmax=100, aspect="equal")
        for i in range(n):
            for j in range(n):
                if not np.isfinite(pct[i, j]):
                    text, color = "–", "0.5"
                else:
                    text = f"{pct[i, j]:.0f}"
                    color = "white" if pct[i, j] > 55 else ("0.55" if counts[i, j] == 0 else "black")
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
        # Images per true class, right of the matrix (as in the paper).
        trans = blended_transform_factory(ax.transAxes, ax.transData)
        ax.text(1.04, -0.6, "n", transform=trans, ha="left", va="bottom", fontsize=9,
                fontweight="bold")
        for i, total in enumerate(row_total):
            label = f"{total:.0f}" if float(total).is_integer() else f"{total:.1f}"
            ax.text(1.04, i, label, transform=trans, ha="left", va="center", fontsize=9)
        ax.set_xticks(range(n), class_names, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), class_names)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(title if title else "Predictions per true class (%)")
    return fig
