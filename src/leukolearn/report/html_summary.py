"""The report's summary: the headline list and the table of results beside the paper's.

A row of this run is compared with the paper's number at the same training size; a size
the sweep capped to its training pool is compared with the paper's size it was asked as
(`paper_rows`).
"""
from __future__ import annotations

from typing import Any, Mapping

from leukolearn.analysis.ensemble import ensemble_size
from leukolearn.analysis.summary import Summary
from leukolearn.report.html_parts import esc, fmt, fmt_n, pm
from leukolearn.report.paper_values import PAPER_CITATION


def paper_rows(summary: Summary, paper, config: Mapping[str, Any]) -> dict[int, int]:
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


def headline(summary: Summary, paper, paper_at: Mapping[int, int], metric: str, largest: int,
             plan, target: float, planned: int) -> str:
    row = summary.row(largest)
    over = f"{row.n_jobs} job{'s' if row.n_jobs != 1 else ''}, {row.n_folds} fold" + (
        "s" if row.n_folds != 1 else "")
    items = [f"At the largest training size (<b>n = {largest}</b>): test {metric} "
             f"<b>{pm(row.mean, row.sd)}</b> ("
             + (f"mean ± s.d. over {over})" if row.n_jobs > 1 else f"{over})")]
    if paper is not None:
        ours_at = {theirs: ours for ours, theirs in paper_at.items()}
        for theirs, (m, s) in sorted(paper.values.items()):
            text = f"{PAPER_CITATION}, n = {theirs}: <b>{m:.2f} ± {s:.2f}</b>; "
            if theirs in ours_at:
                r = summary.row(ours_at[theirs])
                text += f"this run at n = {r.size}: <b>{pm(r.mean, r.sd)}</b>"
            else:
                text += "this run has no results at that size (yet)"
            items.append(text)
        if paper.saturation:
            items.append(f"The paper: {esc(paper.saturation)}.")
    else:
        items.append("The paper reports no numbers for this data set and task: nothing to "
                     "compare with.")
    if plan is not None:
        if plan.plateau:
            items.append(f"Learning curve: {metric} {target:g} is not reached; the fit "
                         f"plateaus at {plan.fit.a:.3f}.")
        else:
            items.append(f"Learning curve: {metric} {target:g} at about "
                         f"<b>{fmt_n(plan.n_needed)}</b> training images "
                         f"({plan.confidence:.0%} CI {fmt_n(plan.n_ci[0])} to "
                         f"{fmt_n(plan.n_ci[1])}).")
    done = sum(r.n_jobs for r in summary.rows)
    if planned and done < planned:
        items.append(f"{done} of up to {planned} planned jobs have finished: the sweep is "
                     "still running or was stopped (run its command again to resume).")
    failed = sum(r.n_failed for r in summary.rows)
    if failed:
        items.append(f"<b>{failed} job{'s' if failed != 1 else ''} failed</b> (see the table); "
                     "running the sweep command again retries them.")
    return '<ul class="headline">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def planned_jobs(config: Mapping[str, Any]) -> int:
    """Jobs the sweep plans, at most (sizes capped to one pool size merge into one); for an
    ensemble run, the ensembles (one per fold and size) that the summary counts."""
    options = config.get("options", {})
    folds = options.get("run_folds") or options.get("folds") or 0
    if isinstance(folds, list):  # the folds it names, not the first k
        folds = len(folds)
    per_size = 1 if ensemble_size(config) else int(options.get("replicates") or 1)
    return int(folds) * len(set(options.get("sizes") or ())) * per_size


def summary_table(summary: Summary, paper, paper_at: Mapping[int, int], metric: str,
                  ensemble_of: int = 0) -> str:
    """The summary as an HTML table; `ensemble_of` K > 0: each job is an ensemble of K."""
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
        cells = [str(r.size), str(r.n_jobs), str(r.n_folds), pm(r.mean, r.sd), fmt(r.median),
                 f"{fmt(r.min)} – {fmt(r.max)}" if r.n_jobs else "–"]
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
            f'<td class="{"num" if i < len(cells) - 1 else "text"}">{esc(c)}</td>'
            for i, c in enumerate(cells)) + "</tr>")
    caption = (f"Test {esc(metric)} per training size, over every finished job (folds × "
               "replicates); s.d. is the sample s.d. Degenerate: constant predictions on the "
               "validation set (kept in the statistics, as the paper's numbers would include "
               "them). Undefined: no metric (e.g. a one-class test set).")
    if ensemble_of:
        caption += (f" Each job here is an ensemble of {ensemble_of} networks trained in the "
                    "same fold from their own initialisations, scored by the mean of their "
                    "probabilities; it counts as degenerate when one of its networks is.")
    if paper is not None:
        caption += (f" {PAPER_CITATION}: mean ± s.d. over 10 folds as reported "
                    f"({esc(paper.source)}).")
    return ('<div class="table-wrap"><table class="results">'
            "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + f'</tbody></table></div><p class="caption">{caption}</p>')

