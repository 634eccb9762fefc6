"""`leukolearn compare`'s page: several methods in the same folds, one self-contained HTML
file (as `leukolearn report`'s: figures embedded, nothing fetched).

Sections: the summary per method and training size side by side, each method against the
first fold by fold (`analysis.comparison.PairedRow`), and the side-by-side Fig 4a.
"""
from __future__ import annotations

import datetime as _dt

from leukolearn.analysis.comparison import CONFIDENCE, Comparison
from leukolearn.analysis.metrics import metric_label
from leukolearn.report.html import page_templates, render_section
from leukolearn.report.html_parts import ReportFigure, Section, esc, fmt, para, pm


def render_comparison(comparison: Comparison, figure_png: bytes, *,
                      now: _dt.datetime | None = None) -> str:
    """The page as one HTML string; `figure_png` is methods_vs_size as drawn for the folder."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    metric = metric_label(comparison.metric_name, capital=False)
    names = comparison.names
    sections = [
        Section("summary", "Summary", _intro(comparison, metric) + _summary_table(comparison)),
        Section("paired", f"Against {names[0]}, fold by fold", _paired_text(comparison, metric)),
        Section("figure", "Side by side", "", [ReportFigure(
            "methods-vs-size", f"Test {esc(metric)} per training size",
            "Per method the median over folds (line), the interquartile range (band) and "
            "every job (dots).", figure_png, "drawn from the runs' stores")]),
    ]
    page, css = page_templates()
    from leukolearn import __version__

    return page.substitute(
        title=esc(f"compare · {', '.join(names)}"), heading="Methods side by side",
        subtitle=esc(f"{len(names)} runs in the same folds, test {metric}"),
        generated=esc(f"{now:%Y-%m-%d %H:%M} UTC by leukolearn {__version__}"),
        toc="\n".join(f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in sections),
        body="\n".join(render_section(s) for s in sections), css=css,
        built="Built from the runs' stores by <code>leukolearn compare</code>")


def _intro(comparison: Comparison, metric: str) -> str:
    scope = ("per training size, only the jobs every run finished: the methods are scored on "
             "the same test images" if comparison.paired else
             "every finished job of each run (with --paired: only the jobs every run finished)")
    return para(f"Mean ± s.d. of the test {esc(metric)} over jobs, median in brackets; "
                f"{scope}.")


def _summary_table(comparison: Comparison) -> str:
    names = comparison.names
    sizes = sorted({r.size for s in comparison.summaries.values() for r in s.rows})
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    rows = []
    for size in sizes:
        cells = []
        for name in names:
            row = next((r for r in comparison.summaries[name].rows if r.size == size), None)
            cells.append("<td>–</td>" if row is None or not row.n_jobs else
                         f"<td>{pm(row.mean, row.sd)} ({fmt(row.median)}), {row.n_jobs} jobs"
                         + (f", {row.n_degenerate} dead" if row.n_degenerate else "") + "</td>")
        rows.append(f"<tr><td>{size}</td>{''.join(cells)}</tr>")
    return (f"<table><thead><tr><th>n</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _paired_text(comparison: Comparison, metric: str) -> str:
    rows = comparison.paired_rows()
    if not rows:
        return para("No training size that the first run shares with another.")
    level = f"{CONFIDENCE:.0%}"
    body = "".join(
        f"<tr><td>{r.size}</td><td>{esc(r.method)}</td><td>{r.n_folds}</td>"
        f"<td>{_signed(r.mean_difference)}</td><td>{_signed(r.ci_low)} to {_signed(r.ci_high)}</td>"
        f"<td>{r.wins} / {r.ties} / {r.losses}</td><td>{fmt(r.wilcoxon_p)}</td></tr>"
        for r in rows)
    return (para(f"Each method minus <b>{esc(comparison.names[0])}</b> on the same folds: the "
                 f"mean of the per-fold differences in test {esc(metric)}, its {level} "
                 "t-interval, the folds won / tied / lost and the two-sided Wilcoxon "
                 "signed-rank p. The folds of one data set share most of their training "
                 "images, so they are not independent samples: read the interval as how "
                 "consistent the difference was on these folds.")
            + "<table><thead><tr><th>n</th><th>method</th><th>folds</th><th>mean difference"
            f"</th><th>{level} CI</th><th>won / tied / lost</th><th>Wilcoxon p</th></tr>"
            f"</thead><tbody>{body}</tbody></table>")


def _signed(v: float) -> str:
    text = fmt(v)
    return text if text == "–" or v < 0 else f"+{text}"
