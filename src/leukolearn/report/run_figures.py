"""The paper's figures for a run, built from its store alone (never by training again)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leukolearn.report.figures import (auc_vs_size, confusion_matrix_percent, loss_curves, mean_roc)
from leukolearn.report.style import save_figure
from leukolearn.report.paper_values import paper_reference
from leukolearn.runstore.store import RunStore
from leukolearn.analysis.metrics import chance_level, metric_label
from leukolearn.analysis.ensemble import scored_run
from leukolearn.analysis.summary import summarize_store
from leukolearn.files import check_writable_dir, write_text


def make_run_figures(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write every figure the run's results allow into out_dir (default RUN/figures), plus
    summary.csv; returns the files written. Figures need finished jobs, not a finished run."""
    out = check_writable_dir(Path(out_dir) if out_dir else Path(run_dir) / "figures")
    store = scored_run(RunStore.open(run_dir))  # an ensemble run: its ensembles
    records = [r for r in store.results() if r.status == "done"]
    if not records:
        return []
    written: list[Path] = []
    summary = summarize_store(store)
    out.mkdir(parents=True, exist_ok=True)
    written.append(write_text(out / "summary.csv", summary.to_csv()))

    largest = max(r.size for r in records)
    at_largest = sorted((r for r in records if r.size == largest), key=lambda r: r.fold)
    first = at_largest[0]
    written += save_figure(
        loss_curves(store.history(first.job_id), fold=first.fold, train_size=largest,
                    best_epoch=first.best_epoch),
        out, "fig3a_loss_curves")

    metric = summary.metric_name
    n_classes = len(store.dataset_info.class_names)
    if n_classes == 2:
        per_fold = []
        for r in at_largest:
            pred = store.predictions(r.job_id)
            per_fold.append((pred.labels, pred.probs[:, 1]))
        written += save_figure(mean_roc(per_fold, title=f"n = {largest} training images"),
                               out, "fig3b_mean_roc")

    sizes = sorted({r.size for r in records})
    values = [np.array([r.metric for r in records if r.size == s], dtype=float) for s in sizes]
    degenerate = [sum(r.degenerate for r in records if r.size == s) for s in sizes]
    task = "binary" if n_classes == 2 else "multiclass"
    paper = _match_sizes(paper_reference(store.dataset_info.name, task), sizes)
    written += save_figure(
        auc_vs_size(sizes, values, metric_name=metric_label(metric), paper=paper,
                    degenerate=degenerate, chance_level=chance_level(metric),
                    # "reproduction" only beside the paper's numbers; else it is just folds
                    label="This reproduction" if paper else "Over folds"),
        out, "fig4a_metric_vs_size")

    if n_classes > 2 and summary.confusion:
        counts = np.asarray(summary.confusion[largest])
        written += save_figure(confusion_matrix_percent(counts, summary.class_names),
                               out, "fig7b_confusion")
    return written


def _match_sizes(paper: dict[int, tuple] | None, sizes: list[int]) -> dict[int, tuple] | None:
    """The paper's values at our sizes: a size capped to the training pool (200 -> 197 on
    ALL-IDB2 without its near-duplicates) still faces the paper's value for 200."""
    if paper is None:
        return None
    matched = {}
    for size, value in paper.items():
        nearest = min(sizes, key=lambda s: abs(s - size))
        if abs(nearest - size) <= 0.05 * size:
            matched[nearest] = value
    return matched


def make_shortcut_figures(out: str | Path, summary: dict, cells, masks: np.ndarray,
                          fill, radius: int) -> list[Path]:
    """The shortcut control's figures in `out`: shortcut_vs_size (the metric of each
    variant over training size, from `summary` as `experiments.shortcut.shortcut_summary`
    gives it) and shortcut_examples (the first image of each class of `cells` as each
    variant shows it, painted with `fill` over `masks`); PNG + SVG, returns the files."""
    from leukolearn.experiments.variants import VARIANTS, apply_variant
    from leukolearn.report.explain_figures import shortcut_figure, variant_examples_figure

    out = Path(out)
    written: list[Path] = []
    variants = {}
    for name, v in summary["variants"].items():
        sizes = [r["size"] for r in v["rows"] for _ in r["values"]]
        values = [x for r in v["rows"] for x in r["values"]]
        variants[name] = (sizes, values)
    if variants:
        metric = summary.get("metric", "auc")
        title = f"Shortcut control ({summary.get('masks_short', 'masks')})"
        written += save_figure(shortcut_figure(variants, metric_name=metric_label(metric),
                                               chance_level=chance_level(metric), title=title),
                               out, "shortcut_vs_size")
    first = [int(np.flatnonzero(cells.labels == k)[0]) for k in np.unique(cells.labels)]
    picked = cells.subset(np.array(first))
    examples = {name: apply_variant(picked, name, masks[first], fill, radius=radius).images
                for name in VARIANTS}
    labels = [f"{cells.image_ids[i]}\n{cells.class_names[cells.labels[i]]}" for i in first]
    written += save_figure(variant_examples_figure(examples, labels), out, "shortcut_examples")
    return written
