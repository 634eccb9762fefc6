"""The report's external validations: every `leukolearn evaluate RUN ...` kept in
RUN/evaluations/<name>/ (evaluation.json and its figure), read as found, never recomputed."""
from __future__ import annotations

import json
import re
from pathlib import Path

from leukolearn.report.html_parts import ReportFigure, Section, esc, fmt, para
from leukolearn.runstore.resume import EVALUATIONS_DIR

MAX_PNG_BYTES = 8 << 20


def evaluations_section(run: Path) -> Section:
    section = Section("evaluations", "External validation")
    found = _evaluations(run)
    if not found:
        section.body = para(
            "No external validation yet. The test folds above come from the images the "
            "models were trained on; <code>leukolearn evaluate RUN DATASET ROOT</code> measures "
            "the models on labelled cells from elsewhere (another lab's) and keeps the result "
            "here.")
        return section
    rows = "".join(_row(name, ev) for name, ev, _ in found)
    section.body = para(
        "The run's models on labelled cells they never saw (<code>leukolearn evaluate</code>), "
        "with 95 % intervals (bootstrap for AUC and F1, Wilson for rates). A blast detector "
        "that holds within one lab may fail on another's stain and scanner: read the rate at "
        "which each other lab's normal cell type is called positive.") + (
        '<table><thead><tr><th>evaluation</th><th>cells</th><th>positive</th><th>ROC-AUC</th>'
        "<th>sensitivity</th><th>specificity</th><th>highest false-positive rate</th>"
        f"<th>weighted F1</th></tr></thead><tbody>{rows}</tbody></table>")
    for name, ev, png in found:
        if png is not None:
            anchor = "evaluation-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            section.figures.append(ReportFigure(
                anchor, f"External validation: {esc(name)}",
                esc(f"{ev.get('n_cells', '?')} cells of {_dataset(ev)}: (a) ROC, (b) "
                    "reliability, (c) the share of each cell type called positive."),
                png, f"{EVALUATIONS_DIR}/{name}/evaluation.png"))
    return section


def _evaluations(run: Path) -> list[tuple[str, dict, bytes | None]]:
    folder = run / EVALUATIONS_DIR
    if not folder.is_dir():
        return []
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            ev = json.loads((sub / "evaluation.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not an evaluation, or a damaged one: left out
            continue
        png_path = sub / "evaluation.png"
        png = None
        if png_path.is_file() and png_path.stat().st_size <= MAX_PNG_BYTES:
            data = png_path.read_bytes()
            png = data if data.startswith(b"\x89PNG\r\n\x1a\n") else None
        found.append((sub.name, ev, png))
    return found


def _dataset(ev: dict) -> str:
    d = ev.get("dataset") or {}
    return f"{d.get('layout') or 'dataset'} {d.get('root') or ''}".strip()


def _interval(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    low, high = (entry.get("ci") or [None, None])[:2]
    inner = f" ({fmt(low)}–{fmt(high)})" if low is not None and high is not None else ""
    return f"{fmt(entry['value'])}{inner}"


def _row(name: str, ev: dict) -> str:
    positive = set(ev.get("positive_dataset_classes") or [])
    negatives = {k: v for k, v in (ev.get("called_positive_per_type") or {}).items()
                 if k not in positive and v.get("value") is not None}
    worst = max(negatives.items(), key=lambda kv: kv[1]["value"], default=None)
    worst_text = (f"{esc(worst[0])}: {_interval(worst[1])}" if worst else "–")
    return (f"<tr><td>{esc(name)}</td><td>{esc(ev.get('n_cells', '?'))}</td>"
            f"<td>{esc(', '.join(sorted(positive)) or '–')} ({esc(ev.get('n_positive', 0))})</td>"
            f"<td>{_interval(ev.get('auc'))}</td><td>{_interval(ev.get('sensitivity'))}</td>"
            f"<td>{_interval(ev.get('specificity'))}</td><td>{worst_text}</td>"
            f"<td>{_interval(ev.get('weighted_f1'))}</td></tr>")
