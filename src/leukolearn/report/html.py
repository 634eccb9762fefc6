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

This module assembles the page; the sections come from html_summary (headline and
results table), html_figures (figure sections), html_card (model card, run details), the
formatters from html_parts. The page and its CSS are files in report/templates/:
page.html is a `string.Template` ($title, $heading, $subtitle, $generated, $toc, $body,
$css) and every value inserted from the run is escaped, so no template engine is needed.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from importlib import resources
from pathlib import Path
from string import Template

from leukolearn.analysis.curves import N_BOOT, TARGET
from leukolearn.analysis.ensemble import ensemble_size, scored_run
from leukolearn.analysis.metrics import metric_label
from leukolearn.analysis.summary import summarize_store
from leukolearn.errors import LeukolearnError
from leukolearn.files import check_new_file, write_bytes
from leukolearn.report.html_card import model_card, run_details
from leukolearn.report.html_evaluations import evaluations_section
from leukolearn.report.html_figures import (calibration_section, curve_fit, curve_section,
                                            found_figures, inside_intro, paper_figures,
                                            paper_figures_intro)
from leukolearn.report.html_parts import ReportFigure, Section, esc, para
from leukolearn.report.html_summary import headline, paper_rows, planned_jobs, summary_table
from leukolearn.report.paper_values import paper_result
from leukolearn.runstore.store import RunStore

# The learning curve's target, and N_BOOT as `leukolearn plan`'s, so the two give the same
# interval: both analysis.curves', where the CLI reads them too.
DEFAULT_TARGET = TARGET
CSS_PX_PER_PNG_PX = 0.72  # 200-dpi PNGs shown at 1.5x print size: 144 CSS px per inch



def write_report(run: str | Path, out: str | Path | None = None, *,
                 target: float = DEFAULT_TARGET, n_boot: int = N_BOOT) -> Path:
    """Write the report of `run` to `out` (default RUN/report.html) atomically; return it.

    `target` and `n_boot` are the learning curve's (as `leukolearn plan --target`)."""
    run = Path(run)
    out = check_new_file(report_path(run, out))  # before the figures are drawn, not after
    text = render_report(run, target=target, n_boot=n_boot)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, text.encode("utf-8"))  # bytes: no newline translation
    return out


def report_path(run: str | Path, out: str | Path | None = None) -> Path:
    """Where `write_report` writes: `out`, out/report.html for a folder, or RUN/report.html."""
    out = Path(out) if out is not None else Path(run) / "report.html"
    return out / "report.html" if out.is_dir() else out


def render_report(run: str | Path, *, target: float = DEFAULT_TARGET, n_boot: int = N_BOOT,
                  now: _dt.datetime | None = None) -> str:
    """The report of `run` as one HTML string (nothing is written)."""
    run = Path(run)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    with RunStore.open(run) as opened:
        store = scored_run(opened)  # an ensemble run is reported by its ensembles
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
        metric = metric_label(summary.metric_name, capital=False)
        largest = max(r.size for r in done)
        example = next(r for r in done if r.size == largest)
        split_sizes = [len(a) for a in store.split(example.job_id)]  # train, val, test
        calib, ece = calibration_section(store, done, largest) if n_classes == 2 else (None, None)

    paper_at = paper_rows(summary, paper, config)
    curve = curve_fit(run, target, n_boot)
    figures = paper_figures(run)
    sections = [
        Section("figures", "Figures of the paper", paper_figures_intro(paper), figures),
        curve_section(curve, metric, target),
    ]
    if calib is not None:
        sections.append(calib)
    else:
        sections.append(Section("calibration", "Calibration",
                                para("Calibration is shown for binary runs (blast probability); "
                                   "this run has " f"{n_classes} classes.")))
    found, skipped = found_figures(run, drop_curve=curve[0] is not None)
    sections.append(Section(
        "inside", "Inside the networks", inside_intro(found, skipped, run), found))
    sections.append(evaluations_section(run))

    head = headline(summary, paper, paper_at, metric, largest, curve[0], target,
                     planned_jobs(config))
    sections = [
        Section("summary", "Summary", head + summary_table(
            summary, paper, paper_at, metric,
            ensemble_of=ensemble_size(config))),
        *sections,
        Section("model-card", "Model card",
                model_card(info, config, summary, paper, metric, largest, split_sizes, ece)),
        Section("run", "Run details", run_details(run, config, info, versions, records)),
    ]
    toc = "\n".join(f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in sections)
    body = "\n".join(render_section(s) for s in sections)
    title = f"{info.name or 'run'} · {run.resolve().name}"
    subtitle = (f"{info.name or 'unnamed data set'} ({', '.join(info.class_names)}), "
                f"protocol <code>{esc(config.get('protocol', '?'))}</code>, {metric}, "
                f"{len(done)} finished jobs")
    page, css = page_templates()
    return page.substitute(
        title=esc(title), heading=esc(f"Run report: {run.resolve().name}"), subtitle=subtitle,
        generated=esc(f"{now:%Y-%m-%d %H:%M} UTC by leukolearn {_own_version()} · run "
                     f"created with leukolearn {versions.get('leukolearn', '?')}"),
        toc=toc, body=body, css=css, built="Built from the run's store by <code>leukolearn report</code>",
    )



def render_section(section: Section) -> str:
    figures = "".join(render_figure(f) for f in section.figures)
    if figures:
        figures = f'<div class="figures">{figures}</div>'
    return (f'<section id="{section.anchor}"><h2>{esc(section.title)}</h2>'
            f"{section.body}{figures}</section>")


def render_figure(fig: ReportFigure) -> str:
    width, height = fig.size
    css_w = max(1, round(width * CSS_PX_PER_PNG_PX))
    css_h = max(1, round(height * CSS_PX_PER_PNG_PX))
    wide = " wide" if css_w > 560 else ""
    data = base64.b64encode(fig.png).decode("ascii")
    alt = html.escape(re.sub(r"<[^>]+>", "", html.unescape(fig.title)), quote=True)
    return (f'<figure id="{fig.anchor}" class="fig{wide}"><img src="data:image/png;base64,{data}"'
            f' width="{css_w}" height="{css_h}" alt="{alt}" decoding="async">'
            f"<figcaption><b>{fig.title}.</b> {fig.caption} "
            f'<span class="src">Source: {esc(fig.source)}</span></figcaption></figure>')



def page_templates() -> tuple[Template, str]:
    """The page template and the CSS, read from the package (an installed wheel has them
    as package data), each time: two small files, next to nothing beside the figures."""
    folder = resources.files("leukolearn.report").joinpath("templates")
    return (Template(folder.joinpath("page.html").read_text(encoding="utf-8")),
            folder.joinpath("report.css").read_text(encoding="utf-8"))


def _own_version() -> str:
    from leukolearn import __version__

    return __version__
