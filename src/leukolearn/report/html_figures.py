"""The report's figure sections: the paper's figures, the learning curve, calibration,
and the figures other commands left in the run directory.

Cheap figures are drawn now, from the store; expensive ones (LRP grids, tSNE, focus and
shortcut sweeps) are only embedded as found, never recomputed.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from leukolearn.errors import LeukolearnError
from leukolearn.report.html_parts import (ReportFigure, Section, esc, fmt, para, png_bytes,
                                          rel_path)
from leukolearn.runstore.store import RunStore
from leukolearn.runstore.resume import EVALUATIONS_DIR

MIN_CURVE_SIZES = 3  # a - b n^-c has three parameters
MIN_CURVE_FOLDS = 3  # fewer folds make the bootstrap over folds meaningless
MAX_FOUND_PNG_BYTES = 20 * 2**20  # a found PNG larger than this is listed, not embedded
PAPER_STEMS = ("fig3a_loss_curves", "fig3b_mean_roc", "fig4a_metric_vs_size", "fig7b_confusion")
CURVE_STEM = "learning_curve_plan"

# Found figures: file-name pattern -> (order, title, caption). Stems come from cli/inside_cmds.py.
_FOUND = (
    (r"fig4b_explain_fold(\d+)_(\w+)", 0, "Saliency and LRP maps: fold {0}, {1} rule (Fig. 4b)",
     "Rows: test images; per training size its saliency map (|gradient|; bright = relevant) "
     "and its LRP map (red for, blue against the predicted class). Drawn by "
     "<code>leukolearn explain</code>."),
    (r"fig5_tsne_fold(\d+)", 1, "Last hidden layer, tSNE: fold {0} (Fig. 5)",
     "tSNE maps of the 32-dimensional last hidden layer on images the model did not train "
     "on, one panel per training size. Drawn by <code>leukolearn embed</code>."),
    (r"separation_vs_size", 2, "Class separation in the hidden layer",
     "Silhouette and kNN accuracy of the last hidden layer over training size, spread over "
     "folds. Drawn by <code>leukolearn embed</code>."),
    (r"focus_vs_size", 3, "Where the relevance lies",
     "Share of positive LRP relevance on nucleus, cytoplasm and background of the test "
     "images, over training size. Drawn by <code>leukolearn focus</code>."),
    (r"shortcut_vs_size", 4, "Shortcut control",
     "The same sweep on the original images, on the cell alone and on the background alone. "
     "If the background alone scores about as well, the networks need not look at the cell. "
     "Drawn by <code>leukolearn shortcut</code>."),
    (r"learning_curve_plan", 5, "Learning curve as drawn by <code>leukolearn plan</code>",
     "The last figure <code>leukolearn plan</code> wrote into the run (its own target and "
     "fit range)."),
)

_PAPER_CAPTIONS = {
    "fig3a_loss_curves": ("Loss curves (Fig. 3a)", "Training and validation loss per epoch of "
                          "the first fold at the largest training size; the kept model (lowest "
                          "validation loss) is marked."),
    "fig3b_mean_roc": ("Mean ROC (Fig. 3b)", "ROC curves of the test sets of every fold at "
                       "the largest training size (grey) and their mean."),
    "fig4a_metric_vs_size": ("Test metric against training size (Fig. 4a / 6)",
                             "Test metric of every job per training size (boxes over folds), "
                             "with the paper's reported values where it has them."),
    "fig7b_confusion": ("Confusion matrix (Fig. 7b)", "Predictions per true class (%), summed "
                        "over the folds at the largest training size."),
}


def paper_figures(run: Path) -> list[ReportFigure]:
    from leukolearn.report.run_figures import make_run_figures

    with tempfile.TemporaryDirectory(prefix="leukolearn-report-") as tmp:
        written = make_run_figures(run, tmp)
        figures = []
        for stem in PAPER_STEMS:
            path = Path(tmp) / f"{stem}.png"
            if path in written or path.exists():
                title, caption = _PAPER_CAPTIONS[stem]
                figures.append(ReportFigure(stem, esc(title), esc(caption), path.read_bytes(),
                                            "drawn from the run's store"))
    return figures


def paper_figures_intro(paper) -> str:
    text = "The paper's figures, drawn from this run's store."
    if paper is None:
        text += " The paper has no reference values for this data set and task."
    return para(text)


def curve_fit(run: Path, target: float, n_boot: int):
    """(plan, note): the learning-curve fit, or None and why it was skipped."""
    from leukolearn.analysis.curves import plan_annotation, run_metric_table

    sizes, folds, values, name = run_metric_table(run)
    with_data = int(np.isfinite(values).any(axis=1).sum())
    if with_data < MIN_CURVE_SIZES:
        return None, (f"Not fitted: a learning curve needs results at {MIN_CURVE_SIZES} or more "
                      f"training sizes; this run has {with_data}.")
    if len(folds) < MIN_CURVE_FOLDS:
        return None, (f"Not fitted: the interval comes from a bootstrap over folds, which "
                      f"needs {MIN_CURVE_FOLDS} or more folds; this run has {len(folds)}.")
    try:
        return plan_annotation(sizes, values, target, metric_name=name, n_boot=n_boot), ""
    except (LeukolearnError, RuntimeError, ValueError) as exc:
        return None, f"Not fitted: {exc}."


def curve_section(curve, metric: str, target: float) -> Section:
    plan, note = curve
    section = Section("learning-curve", "Learning curve")
    if plan is None:
        section.body = para(esc(note) + " <code>leukolearn plan RUN --target 0.95</code> fits it "
                          "once the sweep has more results.")
        return section
    from leukolearn.report.analysis_figures import learning_curve_figure

    section.body = (para(f"The test {esc(metric)} against training size n fitted with an inverse "
                       "power law a − b·n<sup>−c</sup> (Figueroa et al. 2012) on the mean over "
                       f"folds; the band and interval come from {plan.n_boot} bootstrap "
                       f"resamples of the folds (seed {plan.seed}). Target {target:g}; "
                       "<code>leukolearn plan</code> gives the same numbers and more options "
                       "(<code>--fit-max</code>, <code>--validate-at</code>).")
                    + f"<pre>{esc(plan.text())}</pre>")
    section.figures.append(ReportFigure(
        CURVE_STEM, "Learning-curve fit", esc(f"Measured points (folds grey, mean blue), the "
                                             f"fit and its band, and the target {target:g}."),
        png_bytes(learning_curve_figure(plan)), "fitted now"))
    return section


def calibration_section(store: RunStore, done: list, largest: int) -> tuple[Section, float]:
    """The reliability section of the pooled test predictions at `largest`, and its ECE."""
    from leukolearn.analysis.calibration import reliability_curve
    from leukolearn.report.analysis_figures import reliability_diagram

    jobs = [r for r in done if r.size == largest]
    preds = [store.predictions(r.job_id) for r in jobs]
    labels = np.concatenate([p.labels for p in preds])
    scores = np.concatenate([p.probs[:, 1] for p in preds]).astype(float)
    curve = reliability_curve(labels, np.clip(scores, 0.0, 1.0))
    # Class 1 is the one scored above; its name as the run records it ("blast", "ig").
    positive = store.dataset_info.class_names[1]
    section = Section("calibration", "Calibration")
    section.body = para(
        f"Reliability of the {esc(positive)} probability: the test predictions of the {len(jobs)} "
        f"model{'s' if len(jobs) != 1 else ''} trained on n = {largest} images, pooled "
        f"({curve.n} predictions; a cell is counted once per fold it was tested in). "
        f"Expected calibration error (10 bins) <b>{curve.ece:.3f}</b>, maximum "
        f"{fmt(curve.mce)}, Brier score {fmt(curve.brier)}. The models were trained with "
        "early stopping on a small validation set and never calibrated: read the "
        "probabilities as scores unless this diagram says otherwise.")
    section.figures.append(ReportFigure(
        "reliability", "Reliability diagram",
        esc(f"Observed fraction of {positive} cells against the mean predicted probability "
            f"per bin (top), cells per bin (bottom); n = {largest} training images."),
        png_bytes(reliability_diagram(curve, title=f"Pooled test predictions, n = {largest}",
                                      positive=positive)),
        "drawn from the run's store"))
    return section, curve.ece


def found_figures(run: Path, *, drop_curve: bool) -> tuple[list[ReportFigure], list[str]]:
    """PNGs other commands left under the run directory (and, for a shortcut variant run,
    the shortcut figure beside it), minus those this report draws afresh."""
    drawn = set(PAPER_STEMS) | ({CURVE_STEM} if drop_curve else set())
    paths = [p for p in _walk_pngs(run) if p.stem not in drawn]
    parent_shortcut = run.resolve().parent / "shortcut_vs_size.png"
    if (run.resolve().parent / "shortcut.json").exists() and parent_shortcut.is_file():
        paths.append(parent_shortcut)
    figures, skipped = [], []
    ordered = sorted(paths, key=lambda p: (_found_meta(p.stem)[0], p.stem, str(p)))
    for path in ordered:
        rel = rel_path(path, run)
        try:
            data = path.read_bytes() if path.stat().st_size <= MAX_FOUND_PNG_BYTES else None
        except OSError as exc:
            skipped.append(f"{rel} (unreadable: {exc.strerror or exc})")
            continue
        if data is None:
            skipped.append(f"{rel} (larger than {MAX_FOUND_PNG_BYTES >> 20} MB)")
            continue
        if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 24:
            skipped.append(f"{rel} (not a PNG)")
            continue
        _, title, caption = _found_meta(path.stem)
        anchor = "found-" + re.sub(r"[^a-z0-9]+", "-", rel.lower()).strip("-")
        figures.append(ReportFigure(anchor, title, caption, data, rel))
    return figures, skipped


def _walk_pngs(run: Path, max_depth: int = 3) -> Iterable[Path]:
    def walk(folder: Path, depth: int):
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            # weights/: no figures; evaluations/: their own section (html_evaluations)
            if entry.name.startswith(".") or entry.name in ("weights", EVALUATIONS_DIR):
                continue
            if entry.is_dir() and not entry.is_symlink() and depth < max_depth:
                yield from walk(entry, depth + 1)
            elif entry.suffix.lower() == ".png" and entry.is_file():
                yield entry

    yield from walk(run, 0)


def _found_meta(stem: str) -> tuple[int, str, str]:
    for pattern, order, title, caption in _FOUND:
        m = re.fullmatch(pattern, stem)
        if m:
            groups = [str(int(g)) if g.isdigit() else g for g in m.groups()]
            return order, title.format(*(esc(g) for g in groups)), caption
    return len(_FOUND), f"<code>{esc(stem)}</code>", "A figure found in the run directory."


def inside_intro(found: list[ReportFigure], skipped: list[str], run: Path) -> str:
    if found:
        text = para("Figures that <code>leukolearn explain</code>, <code>embed</code>, "
                  "<code>focus</code> and <code>shortcut</code> wrote into the run directory, "
                  "embedded as found (this report does not recompute them).")
    else:
        text = para("None yet: <code>leukolearn explain RUN</code> (saliency and LRP maps, "
                  "Fig. 4b), <code>embed RUN</code> (tSNE, Fig. 5), <code>focus RUN</code> "
                  "(relevance on nucleus, cytoplasm and background) and <code>shortcut</code> "
                  "(the background-only control) write their figures into RUN/figures, where "
                  "the next report picks them up.")
    if skipped:
        text += para("Not embedded: " + "; ".join(esc(s) for s in skipped) + ".")
    return text

