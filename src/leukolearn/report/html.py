"""`leukolearn report`: one self-contained HTML page per run, built from its store alone.

The page holds the run's config, dataset fingerprint and package versions; the summary
table beside the paper's numbers (when the run is on one of the paper's data sets); every
figure of the run; and a short model card. Figures are PNGs embedded as base64 data URIs
and the CSS is inline, so the file opens offline, can be mailed or archived as one file,
and fetches nothing (no scripts, fonts or stylesheets from elsewhere).

What is drawn now (cheap): the paper figures (`make_run_figures`, into a temporary folder),
the learning-curve fit (`curves.plan_annotation`) and, for binary runs, the reliability
diagram of the pooled test predictions at the largest training size. What is expensive
(LRP grids, tSNE, focus and shortcut sweeps) is never recomputed: PNGs that `explain`,
`embed`, `focus` and `shortcut` left in the run directory are embedded as found.

The HTML comes from a `string.Template` with every inserted value escaped, so no template
engine is needed.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Iterable, Mapping

import numpy as np

from leukolearn.errors import LeukolearnError
from leukolearn.report.paper_values import PAPER_CITATION, paper_result
from leukolearn.runstore.store import RunStore
from leukolearn.analysis.summary import Summary, summarize_store

DEFAULT_TARGET = 0.95  # learning-curve target: "how many images for AUC 0.95"
N_BOOT = 1000  # as `leukolearn plan`, so the two give the same interval
MIN_CURVE_SIZES = 3  # a - b n^-c has three parameters
MIN_CURVE_FOLDS = 3  # fewer folds make the bootstrap over folds meaningless
MAX_FOUND_PNG_BYTES = 20 * 2**20  # a found PNG larger than this is listed, not embedded
CSS_PX_PER_PNG_PX = 0.72  # 200-dpi PNGs shown at 1.5x print size: 144 CSS px per inch

METRIC_NAMES = {"auc": "ROC-AUC", "weighted_f1": "weighted F1"}
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


@dataclass(frozen=True)
class ReportFigure:
    anchor: str
    title: str  # HTML (trusted: built here)
    caption: str  # HTML (trusted: built here)
    png: bytes
    source: str  # where it came from, plain text

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, from the PNG header."""
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")


@dataclass
class Section:
    anchor: str
    title: str
    body: str = ""  # HTML
    figures: list[ReportFigure] = field(default_factory=list)


def write_report(run: str | Path, out: str | Path | None = None, *,
                 target: float = DEFAULT_TARGET, n_boot: int = N_BOOT) -> Path:
    """Write the report of `run` to `out` (default RUN/report.html) atomically; return it.

    `target` and `n_boot` are the learning curve's (as `leukolearn plan --target`)."""
    run = Path(run)
    out = Path(out) if out is not None else run / "report.html"
    if out.is_dir():
        out = out / "report.html"
    text = render_report(run, target=target, n_boot=n_boot)
    _atomic_write(out, text.encode("utf-8"))
    return out


def render_report(run: str | Path, *, target: float = DEFAULT_TARGET, n_boot: int = N_BOOT,
                  now: _dt.datetime | None = None) -> str:
    """The report of `run` as one HTML string (nothing is written)."""
    run = Path(run)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    with RunStore.open(run) as store:
        info = store.dataset_info
        config = store.config_dict
        versions = store.versions
        records = store.results(include_failed=True)
        done = [r for r in records if r.status == "done"]
        if not done:
            raise LeukolearnError(f"{run}: no finished jobs yet, nothing to report")
        summary = summarize_store(store)
        n_classes = len(info.class_names)
        task = "binary" if n_classes == 2 else "multiclass"
        paper = paper_result(info.name, task)
        metric = METRIC_NAMES.get(summary.metric_name, summary.metric_name)
        largest = max(r.size for r in done)
        example = next(r for r in done if r.size == largest)
        split_sizes = [len(a) for a in store.split(example.job_id)]  # train, val, test
        calib, ece = _calibration(store, done, largest) if n_classes == 2 else (None, None)

    paper_at = _paper_rows(summary, paper, config)
    curve = _curve(run, target, n_boot)
    figures = _paper_figures(run)
    sections = [
        Section("figures", "Figures of the paper", _paper_figures_intro(paper), figures),
        _curve_section(curve, metric, target),
    ]
    if calib is not None:
        sections.append(calib)
    else:
        sections.append(Section("calibration", "Calibration",
                                _p("Calibration is shown for binary runs (blast probability); "
                                   "this run has " f"{n_classes} classes.")))
    found, skipped = _found_figures(run, drop_curve=curve[0] is not None)
    sections.append(Section(
        "inside", "Inside the networks", _inside_intro(found, skipped, run), found))

    head = _headline(summary, paper, paper_at, metric, largest, curve[0], target,
                     _planned_jobs(config))
    sections = [
        Section("summary", "Summary", head + _summary_table(summary, paper, paper_at, metric)),
        *sections,
        Section("model-card", "Model card",
                _model_card(info, config, summary, paper, metric, largest, split_sizes, ece)),
        Section("run", "Run details", _run_details(run, config, info, versions, records)),
    ]
    toc = "\n".join(f'<li><a href="#{s.anchor}">{_e(s.title)}</a></li>' for s in sections)
    body = "\n".join(_render_section(s) for s in sections)
    title = f"{info.name or 'run'} · {run.resolve().name}"
    subtitle = (f"{info.name or 'unnamed data set'} ({', '.join(info.class_names)}), "
                f"protocol <code>{_e(config.get('protocol', '?'))}</code>, {metric}, "
                f"{len(done)} finished jobs")
    return _PAGE.substitute(
        title=_e(title), heading=_e(f"Run report: {run.resolve().name}"), subtitle=subtitle,
        generated=_e(f"{now:%Y-%m-%d %H:%M} UTC by leukolearn {_own_version()} · run "
                     f"created with leukolearn {versions.get('leukolearn', '?')}"),
        toc=toc, body=body, css=_CSS,
    )


# ------------------------------------------------------------------------------ results
def _paper_rows(summary: Summary, paper, config: Mapping[str, Any]) -> dict[int, int]:
    """Our row size -> the paper's training size it is compared with.

    Exact sizes match. A paper size the sweep asked for but capped to a smaller training
    pool (ALL-IDB2: 200 -> 197 after deduplication) matches the largest row when that row's
    size is not one that was asked for (so it is the cap, not a sweep still under way)."""
    if paper is None or not summary.rows:
        return {}
    ours = {r.size for r in summary.rows if r.n_jobs}
    if not ours:
        return {}
    options = config.get("options", {})
    asked = set(options.get("sizes") or ())
    top = max(ours)
    out = {}
    for size in paper.values:
        if size in ours:
            out[size] = size
        elif options.get("cap_sizes") and size in asked and top < size and top not in asked:
            out[top] = size
    return out


def _headline(summary: Summary, paper, paper_at: Mapping[int, int], metric: str, largest: int,
              plan, target: float, planned: int) -> str:
    row = summary.row(largest)
    over = f"{row.n_jobs} job{'s' if row.n_jobs != 1 else ''}, {row.n_folds} fold" + (
        "s" if row.n_folds != 1 else "")
    items = [f"At the largest training size (<b>n = {largest}</b>): test {metric} "
             f"<b>{_pm(row.mean, row.sd)}</b> ("
             + (f"mean ± s.d. over {over})" if row.n_jobs > 1 else f"{over})")]
    if paper is not None:
        ours_at = {theirs: ours for ours, theirs in paper_at.items()}
        for theirs, (m, s) in sorted(paper.values.items()):
            text = f"{PAPER_CITATION}, n = {theirs}: <b>{m:.2f} ± {s:.2f}</b>; "
            if theirs in ours_at:
                r = summary.row(ours_at[theirs])
                text += f"this run at n = {r.size}: <b>{_pm(r.mean, r.sd)}</b>"
            else:
                text += "this run has no results at that size (yet)"
            items.append(text)
        if paper.saturation:
            items.append(f"The paper: {_e(paper.saturation)}.")
    else:
        items.append("The paper reports no numbers for this data set and task: nothing to "
                     "compare with.")
    if plan is not None:
        if plan.plateau:
            items.append(f"Learning curve: {metric} {target:g} is not reached; the fit "
                         f"plateaus at {plan.fit.a:.3f}.")
        else:
            items.append(f"Learning curve: {metric} {target:g} at about "
                         f"<b>{_fmt_n(plan.n_needed)}</b> training images "
                         f"({plan.confidence:.0%} CI {_fmt_n(plan.n_ci[0])} to "
                         f"{_fmt_n(plan.n_ci[1])}).")
    done = sum(r.n_jobs for r in summary.rows)
    if planned and done < planned:
        items.append(f"{done} of up to {planned} planned jobs have finished: the sweep is "
                     "still running or was stopped (run its command again to resume).")
    failed = sum(r.n_failed for r in summary.rows)
    if failed:
        items.append(f"<b>{failed} job{'s' if failed != 1 else ''} failed</b> (see the table); "
                     "running the sweep command again retries them.")
    return '<ul class="headline">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _planned_jobs(config: Mapping[str, Any]) -> int:
    """Jobs the sweep plans, at most (sizes capped to one pool size merge into one)."""
    options = config.get("options", {})
    folds = options.get("run_folds") or options.get("folds") or 0
    return int(folds) * len(set(options.get("sizes") or ())) * int(options.get("replicates") or 1)


def _summary_table(summary: Summary, paper, paper_at: Mapping[int, int], metric: str) -> str:
    head = ["Training images", "Jobs", "Folds", "Mean\u00a0±\u00a0s.d.", "Median",
            "Min\u00a0–\u00a0max"]
    if paper is not None:
        head.append(f"{PAPER_CITATION}")
    head.append("Notes")
    rows = []
    for r in summary.rows:
        notes = []
        if r.n_degenerate:
            notes.append(f"{r.n_degenerate} degenerate")
        if r.n_undefined:
            notes.append(f"{r.n_undefined} undefined")
        if r.n_failed:
            notes.append(f"{r.n_failed} failed")
        if r.n_restarted:
            notes.append(f"{r.n_restarted} restarted")
        cells = [str(r.size), str(r.n_jobs), str(r.n_folds), _pm(r.mean, r.sd), _f(r.median),
                 f"{_f(r.min)} – {_f(r.max)}" if r.n_jobs else "–"]
        if paper is not None:
            if r.size in paper_at:
                m, s = paper.values[paper_at[r.size]]
                note = "" if paper_at[r.size] == r.size else f" (n = {paper_at[r.size]})"
                cells.append(f"{m:.2f} ± {s:.2f}{note}")
            else:
                cells.append("")
        cells.append(", ".join(notes))
        cls = ' class="paper-row"' if r.size in paper_at else ""
        rows.append(f"<tr{cls}>" + "".join(
            f'<td class="{"num" if i < len(cells) - 1 else "text"}">{_e(c)}</td>'
            for i, c in enumerate(cells)) + "</tr>")
    caption = (f"Test {_e(metric)} per training size, over every finished job (folds × "
               "replicates); s.d. is the sample s.d. Degenerate: constant predictions on the "
               "validation set (kept in the statistics, as the paper's numbers would include "
               "them). Undefined: no metric (e.g. a one-class test set).")
    if paper is not None:
        caption += (f" {PAPER_CITATION}: mean ± s.d. over 10 folds as reported "
                    f"({_e(paper.source)}).")
    return ('<div class="table-wrap"><table class="results">'
            "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + f'</tbody></table></div><p class="caption">{caption}</p>')


# ------------------------------------------------------------------------------ figures
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


def _paper_figures(run: Path) -> list[ReportFigure]:
    from leukolearn.report.run_figures import make_run_figures

    with tempfile.TemporaryDirectory(prefix="leukolearn-report-") as tmp:
        written = make_run_figures(run, tmp)
        figures = []
        for stem in PAPER_STEMS:
            path = Path(tmp) / f"{stem}.png"
            if path in written or path.exists():
                title, caption = _PAPER_CAPTIONS[stem]
                figures.append(ReportFigure(stem, _e(title), _e(caption), path.read_bytes(),
                                            "drawn from the run's store"))
    return figures


def _paper_figures_intro(paper) -> str:
    text = "The paper's figures, drawn from this run's store."
    if paper is None:
        text += " The paper has no reference values for this data set and task."
    return _p(text)


def _curve(run: Path, target: float, n_boot: int):
    """(plan, note): the learning-curve fit, or None and why it was skipped."""
    from leukolearn.analysis.curves import metric_table, plan_annotation

    with RunStore.open(run) as store:
        sizes, folds, values, name = metric_table(store.results())
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


def _curve_section(curve, metric: str, target: float) -> Section:
    plan, note = curve
    section = Section("learning-curve", "Learning curve")
    if plan is None:
        section.body = _p(_e(note) + " <code>leukolearn plan RUN --target 0.95</code> fits it "
                          "once the sweep has more results.")
        return section
    from leukolearn.report.analysis_figures import learning_curve_figure

    section.body = (_p(f"The test {_e(metric)} against training size n fitted with an inverse "
                       "power law a − b·n<sup>−c</sup> (Figueroa et al. 2012) on the mean over "
                       f"folds; the band and interval come from {plan.n_boot} bootstrap "
                       f"resamples of the folds (seed {plan.seed}). Target {target:g}; "
                       "<code>leukolearn plan</code> gives the same numbers and more options "
                       "(<code>--fit-max</code>, <code>--validate-at</code>).")
                    + f"<pre>{_e(plan.text())}</pre>")
    section.figures.append(ReportFigure(
        CURVE_STEM, "Learning-curve fit", _e(f"Measured points (folds grey, mean blue), the "
                                             f"fit and its band, and the target {target:g}."),
        _png(learning_curve_figure(plan)), "fitted now"))
    return section


def _calibration(store: RunStore, done: list, largest: int) -> tuple[Section, float]:
    """The reliability section of the pooled test predictions at `largest`, and its ECE."""
    from leukolearn.analysis.calibration import reliability_curve
    from leukolearn.report.analysis_figures import reliability_diagram

    jobs = [r for r in done if r.size == largest]
    preds = [store.predictions(r.job_id) for r in jobs]
    labels = np.concatenate([p.labels for p in preds])
    scores = np.concatenate([p.probs[:, 1] for p in preds]).astype(float)
    curve = reliability_curve(labels, np.clip(scores, 0.0, 1.0))
    section = Section("calibration", "Calibration")
    section.body = _p(
        f"Reliability of the blast probability: the test predictions of the {len(jobs)} "
        f"model{'s' if len(jobs) != 1 else ''} trained on n = {largest} images, pooled "
        f"({curve.n} predictions; a cell is counted once per fold it was tested in). "
        f"Expected calibration error (10 bins) <b>{curve.ece:.3f}</b>, maximum "
        f"{_f(curve.mce)}, Brier score {_f(curve.brier)}. The models were trained with "
        "early stopping on a small validation set and never calibrated: read the "
        "probabilities as scores unless this diagram says otherwise.")
    section.figures.append(ReportFigure(
        "reliability", "Reliability diagram",
        _e(f"Observed fraction of blasts against the mean predicted probability per bin "
           f"(top), cells per bin (bottom); n = {largest} training images."),
        _png(reliability_diagram(curve, title=f"Pooled test predictions, n = {largest}")),
        "drawn from the run's store"))
    return section, curve.ece


def _found_figures(run: Path, *, drop_curve: bool) -> tuple[list[ReportFigure], list[str]]:
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
        rel = _rel(path, run)
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
            if entry.name.startswith(".") or entry.name == "weights":
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
            return order, title.format(*(_e(g) for g in groups)), caption
    return len(_FOUND), f"<code>{_e(stem)}</code>", "A figure found in the run directory."


def _inside_intro(found: list[ReportFigure], skipped: list[str], run: Path) -> str:
    if found:
        text = _p("Figures that <code>leukolearn explain</code>, <code>embed</code>, "
                  "<code>focus</code> and <code>shortcut</code> wrote into the run directory, "
                  "embedded as found (this report does not recompute them).")
    else:
        text = _p("None yet: <code>leukolearn explain RUN</code> (saliency and LRP maps, "
                  "Fig. 4b), <code>embed RUN</code> (tSNE, Fig. 5), <code>focus RUN</code> "
                  "(relevance on nucleus, cytoplasm and background) and <code>shortcut</code> "
                  "(the background-only control) write their figures into RUN/figures, where "
                  "the next report picks them up.")
    if skipped:
        text += _p("Not embedded: " + "; ".join(_e(s) for s in skipped) + ".")
    return text


# ------------------------------------------------------------------------------ model card
def _model_card(info, config: Mapping[str, Any], summary: Summary, paper, metric: str,
                largest: int, split_sizes: list[int], ece: float | None) -> str:
    options = config.get("options", {})
    train = config.get("train", {})
    n_folds = max((r.n_folds for r in summary.rows), default=0)
    counts = ", ".join(f"{_e(k)} {v}" for k, v in info.class_counts.items())
    image_size = info.load_options.get("size")
    dedupe = info.load_options.get("dedupe")
    n_train, n_val, n_test = split_sizes
    name = (info.name or "").lower().replace("_", "-")
    limits = [
        "<b>Research use only.</b> Not a diagnostic device: it is not validated for, and must "
        "not inform, the diagnosis or treatment of any patient.",
        f"<b>Small data.</b> {info.n_images} images in all; each fold tests on {n_test} "
        "images, so one misclassified cell moves the metric visibly and the spread over folds "
        "is mostly split-to-split variation. Differences within one s.d. are not evidence.",
        "<b>Single cells only.</b> Inputs are pre-cropped images of one centred cell; the "
        "model does not find cells in a smear, and other crops, stains, microscopes or "
        "cameras are outside what it was tested on.",
    ]
    if name == "all-idb2":
        limits.append(
            "<b>Known batch effect.</b> In ALL-IDB2 the blast and healthy photographs differ "
            "in background colour (different acquisition batches), so a network can score "
            "well from the background alone. A high AUC here is therefore not proof that the "
            "network recognises blasts; the shortcut control (<code>leukolearn "
            "shortcut</code>: cell-only vs background-only sweeps) and the focus figure "
            "measure how much of the result that explains.")
    elif name == "aml-lmu":
        limits.append(
            "<b>One institution.</b> AML-Cytomorphology_LMU comes from one hospital "
            "(one staining protocol and scanner); performance on other sites is unknown.")
    limits.append(
        "<b>Probabilities.</b> The outputs are softmax scores of models selected by early "
        "stopping, not calibrated risks"
        + (f" (pooled ECE {ece:.3f} at n = {largest})" if ece is not None and
           math.isfinite(ece) else "") + "; choose a threshold with "
        "<code>leukolearn calibrate</code> on held-out labelled cells before relying on one.")
    comparison = ""
    if paper is not None:
        comparison = (f" The paper ({PAPER_CITATION}) reports "
                      + "; ".join(f"{m:.2f} ± {s:.2f} at n = {n}"
                                  for n, (m, s) in sorted(paper.values.items())) + ".")
    row = summary.row(largest)
    items = [
        ("Model", "The small CNN of Schouten et al. (Sci Rep 2021): six blocks of 3×3 "
         "convolution, ReLU and 2×2 max-pooling (4–16 filters), a dense layer of 32 and a "
         f"softmax over {len(info.class_names)} classes; a few thousand parameters. One model "
         "per fold and training size (files in RUN/weights)."),
        ("Intended use", "Research: measuring how many annotated single-cell images a blast "
         "detector needs, reproducing and extending the paper, and studying what such small "
         "networks learn. Not for clinical use."),
        ("Training data", f"{_e(info.name or 'unnamed')}: {info.n_images} images "
         f"({counts})" + (f", resized to {image_size}×{image_size}" if image_size else "")
         + (", duplicates removed" if dedupe else "") + ". Per fold at the largest size: "
         f"{n_train} training, {n_val} validation (early stopping), {n_test} test images; "
         f"training sizes {', '.join(str(r.size) for r in summary.rows)}. Optimiser "
         f"{_e(train.get('optimizer', '?'))}, learning rate {_e(train.get('lr', '?'))}, "
         f"batch {_e(train.get('batch_size', '?'))}, augmentation "
         f"{'on' if train.get('augment') else 'off'}."),
        ("Evaluation", f"Test {_e(metric)} on the held-out test images of each of "
         f"{n_folds} cross-validation fold{'s' if n_folds != 1 else ''} "
         f"(protocol <code>{_e(config.get('protocol', '?'))}</code>, split seed "
         f"{_e(options.get('seed', '?'))}); at n = {largest}: {_pm(row.mean, row.sd)} "
         f"(mean ± s.d.).{comparison}"),
        ("Limits", "<ul>" + "".join(f"<li>{x}</li>" for x in limits) + "</ul>"),
    ]
    return '<dl class="card">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


# ------------------------------------------------------------------------------ run details
def _run_details(run: Path, config: Mapping[str, Any], info, versions: Mapping[str, Any],
                 records: list) -> str:
    done = [r for r in records if r.status == "done"]
    failed = [r for r in records if r.status != "done"]
    seconds = sum(r.seconds or 0.0 for r in done)
    finished = sorted(_when(r.finished_at) for r in records if r.finished_at)
    jobs = [("run directory", str(run.resolve())), ("finished jobs", len(done)),
            ("failed jobs", len(failed)), ("training time (sum over jobs)", _duration(seconds))]
    if finished:
        jobs += [("first job finished", finished[0]), ("last job finished", finished[-1])]
    dataset = info.to_dict()
    return (
        '<div class="details">'
        + _kv_table("Jobs", jobs)
        + _kv_table("Package versions (at run creation)", list(versions.items()))
        + _kv_table("Dataset (dataset.json)", _flatten(dataset), code_keys={"fingerprint", "root"})
        + _kv_table("Configuration (config.json)", _flatten(config))
        + "</div>"
        + (_p("Last failure: <code>" + _e(failed[-1].error or "?") + "</code>") if failed else "")
    )


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in d.items():
        if isinstance(value, Mapping) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _kv_table(title: str, rows: list[tuple[str, Any]], code_keys: set[str] = frozenset()) -> str:
    def value(k: str, v: Any) -> str:
        if isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v)) if v else "–"
        elif isinstance(v, Mapping):
            v = "–" if not v else ", ".join(f"{a}: {b}" for a, b in v.items())
        elif v is None:
            v = "–"
        elif isinstance(v, bool):
            v = "true" if v else "false"  # as in the JSON files
        text = _e(str(v))
        return f"<code>{text}</code>" if k.split(".")[-1] in code_keys else text

    body = "".join(f"<tr><th>{_e(k)}</th><td>{value(k, v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><caption>{_e(title)}</caption><tbody>{body}</tbody></table>'


# ------------------------------------------------------------------------------ HTML pieces
def _render_section(section: Section) -> str:
    figures = "".join(_render_figure(f) for f in section.figures)
    if figures:
        figures = f'<div class="figures">{figures}</div>'
    return (f'<section id="{section.anchor}"><h2>{_e(section.title)}</h2>'
            f"{section.body}{figures}</section>")


def _render_figure(fig: ReportFigure) -> str:
    width, height = fig.size
    css_w = max(1, round(width * CSS_PX_PER_PNG_PX))
    css_h = max(1, round(height * CSS_PX_PER_PNG_PX))
    wide = " wide" if css_w > 560 else ""
    data = base64.b64encode(fig.png).decode("ascii")
    alt = html.escape(re.sub(r"<[^>]+>", "", html.unescape(fig.title)), quote=True)
    return (f'<figure id="{fig.anchor}" class="fig{wide}"><img src="data:image/png;base64,{data}"'
            f' width="{css_w}" height="{css_h}" alt="{alt}" decoding="async">'
            f"<figcaption><b>{fig.title}.</b> {fig.caption} "
            f'<span class="src">Source: {_e(fig.source)}</span></figcaption></figure>')


def _png(fig) -> bytes:
    """A matplotlib Figure as PNG bytes, exactly as `save_figure` would write it."""
    import matplotlib as mpl

    from leukolearn.report.style import PNG_DPI, RC

    buf = io.BytesIO()
    with mpl.rc_context(RC):
        fig.savefig(buf, format="png", dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.03,
                    facecolor="white")
    return buf.getvalue()


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _p(inner: str) -> str:
    return f"<p>{inner}</p>"


def _f(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _pm(mean: float, sd: float) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    return _f(mean) if sd is None or not math.isfinite(sd) else f"{mean:.3f} ± {sd:.3f}"


def _fmt_n(v: float) -> str:
    return "∞" if not math.isfinite(v) else f"{math.ceil(v):,}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _when(iso: str) -> str:
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
    return f"{t:%Y-%m-%d %H:%M} UTC"


def _rel(path: Path, run: Path) -> str:
    try:
        return str(path.resolve().relative_to(run.resolve()))
    except ValueError:
        return str(Path("..") / path.name)


def _own_version() -> str:
    from leukolearn import __version__

    return __version__


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: a reader sees
    the old report or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------ the page
_CSS = """
:root { color-scheme: light; --fg: #1d2430; --muted: #5b6472; --line: #dfe3e8;
  --accent: #0072B2; --paper: #D55E00; --bg: #ffffff; --soft: #f5f7f9; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; scroll-behavior: smooth; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", sans-serif; }
.layout { max-width: 1180px; margin: 0 auto; padding: 0 24px 64px;
  display: grid; grid-template-columns: 200px minmax(0, 1fr); gap: 0 40px; }
header.top { grid-column: 1 / -1; padding: 28px 0 14px; border-bottom: 1px solid var(--line); }
header.top h1 { margin: 0 0 4px; font-size: 1.7rem; line-height: 1.25; letter-spacing: -0.01em; }
header.top .sub { margin: 0; color: var(--muted); }
header.top .gen { margin: 4px 0 0; color: var(--muted); font-size: 0.85rem; }
nav.toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto;
  padding: 22px 0; font-size: 0.92rem; }
nav.toc h2 { font-size: 0.75rem; text-transform: uppercase; letter-spacing: 0.08em;
  color: var(--muted); margin: 0 0 8px; border: 0; padding: 0; }
nav.toc ol { list-style: none; margin: 0; padding: 0; }
nav.toc li { margin: 0; }
nav.toc a { display: block; padding: 5px 10px; border-left: 2px solid var(--line);
  color: var(--fg); text-decoration: none; }
nav.toc a:hover { border-left-color: var(--accent); color: var(--accent); background: var(--soft); }
main { min-width: 0; max-width: 880px; }
section { padding-top: 8px; scroll-margin-top: 12px; }
main > section:first-child h2 { margin-top: 14px; }
h2 { font-size: 1.3rem; margin: 28px 0 10px; padding-bottom: 6px;
  border-bottom: 1px solid var(--line); }
p, ul, dl { margin: 0 0 12px; }
a { color: var(--accent); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: 0.88em; }
code { background: var(--soft); padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 12px; overflow-x: auto; white-space: pre-wrap; line-height: 1.45; }
ul.headline { background: #f1f7fb; border-left: 4px solid var(--accent); border-radius: 4px;
  padding: 12px 16px 12px 34px; }
ul.headline li { margin: 3px 0; }
.table-wrap { overflow-x: auto; margin: 14px 0 6px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.results { width: 100%; font-size: 0.93rem; }
p.caption { color: var(--muted); font-size: 0.83rem; margin-top: 0; }
table.kv caption { caption-side: top; text-align: left; font-weight: 600; color: var(--fg);
  font-size: 0.95rem;
  padding: 0 0 6px; }
table.results th { text-align: right; vertical-align: bottom; font-weight: 600;
  padding: 7px 8px; border-bottom: 2px solid var(--fg); line-height: 1.3; }
table.results th:first-child { text-align: right; }
table.results th:last-child { text-align: left; }
table.results td { padding: 6px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.results td.num { text-align: right; }
table.results td.text { text-align: left; color: var(--muted); white-space: normal;
  min-width: 7em; font-size: 0.88em; }
table.results tbody tr:nth-child(even) { background: var(--soft); }
table.results tr.paper-row td { font-weight: 600; }
table.results th:nth-last-child(2), table.results tr.paper-row td:nth-last-child(2) {
  color: var(--paper); }
.details { columns: 2 320px; column-gap: 32px; }
table.kv { width: 100%; font-size: 0.88rem; break-inside: avoid; margin-bottom: 22px; }
table.kv th { text-align: left; font-weight: 500; color: var(--muted); padding: 4px 12px 4px 0;
  vertical-align: top; white-space: nowrap; border-bottom: 1px solid var(--line); }
table.kv td { padding: 4px 0; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr));
  gap: 22px 28px; margin: 16px 0; align-items: start; }
figure.fig { margin: 0; }
figure.fig.wide { grid-column: 1 / -1; }
figure.fig img { display: block; max-width: 100%; height: auto; margin: 0 auto;
  border: 1px solid var(--line); border-radius: 4px; background: #fff; }
figcaption { font-size: 0.86rem; color: var(--muted); margin-top: 6px; }
figcaption b { color: var(--fg); font-weight: 600; }
figcaption .src { display: block; font-size: 0.78rem; opacity: 0.85; }
dl.card { display: grid; grid-template-columns: 150px minmax(0, 1fr); gap: 10px 20px; }
dl.card dt { font-weight: 600; }
dl.card dd { margin: 0; }
dl.card ul { padding-left: 20px; margin: 0; }
dl.card li { margin-bottom: 6px; }
footer { grid-column: 1 / -1; color: var(--muted); font-size: 0.82rem;
  border-top: 1px solid var(--line); padding-top: 12px; }
@media (max-width: 900px) {
  .layout { grid-template-columns: minmax(0, 1fr); gap: 0; padding: 0 16px 48px; }
  nav.toc { position: static; max-height: none; padding: 12px 0 0; }
  nav.toc ol { display: flex; flex-wrap: wrap; gap: 4px 6px; }
  nav.toc a { border: 1px solid var(--line); border-radius: 14px; padding: 2px 10px; }
  dl.card { grid-template-columns: minmax(0, 1fr); gap: 2px; }
  dl.card dd { margin-bottom: 10px; }
  .figures { grid-template-columns: minmax(0, 1fr); }
}
@media print {
  nav.toc { display: none; }
  .layout { display: block; max-width: none; }
  figure.fig { break-inside: avoid; }
}
"""

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="leukolearn report">
<title>$title</title>
<style>$css</style>
</head>
<body>
<div class="layout">
<header class="top">
<h1>$heading</h1>
<p class="sub">$subtitle</p>
<p class="gen">Generated $generated</p>
</header>
<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>
$toc
</ol></nav>
<main>
$body
</main>
<footer>Self-contained: every figure is embedded; the page loads nothing from elsewhere.
Built from the run's store by <code>leukolearn report</code>; reproduces and extends
Schouten et al., &ldquo;Tens of images can suffice to train neural networks for malignant
leukocyte detection&rdquo;, Sci Rep 11, 7995 (2021).</footer>
</div>
</body>
</html>
""")
