"""The report's text about the model and the run: the model card and the run details
(jobs, package versions, dataset.json and config.json as key-value tables)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from leukolearn.analysis.ensemble import ensemble_size
from leukolearn.analysis.summary import Summary
from leukolearn.experiments.methods import DEFAULT_MODEL, check_model
from leukolearn.report.html_parts import duration, esc, para, pm, when
from leukolearn.report.paper_values import PAPER_CITATION


def model_card(info, config: Mapping[str, Any], summary: Summary, paper, metric: str,
               largest: int, split_sizes: list[int], ece: float | None) -> str:
    options = config.get("options", {})
    train = config.get("train", {})
    n_folds = max((r.n_folds for r in summary.rows), default=0)
    counts = ", ".join(f"{esc(k)} {v}" for k, v in info.class_counts.items())
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
        ("Model", _model_text(config, len(info.class_names))
         + (f"An ensemble of {ensemble_size(config)} such networks per fold and training "
            "size, the mean of their probabilities" if ensemble_size(config) else
            "One model per fold and training size") + " (files in RUN/weights)."),
        ("Intended use", "Research: measuring how many annotated single-cell images a blast "
         "detector needs, reproducing and extending the paper, and studying what such small "
         "networks learn. Not for clinical use."),
        ("Training data", f"{esc(info.name or 'unnamed')}: {info.n_images} images "
         f"({counts})" + (f", resized to {image_size}×{image_size}" if image_size else "")
         + (", duplicates removed" if dedupe else "") + ". Per fold at the largest size: "
         f"{n_train} training, {n_val} validation (early stopping), {n_test} test images; "
         f"training sizes {', '.join(str(r.size) for r in summary.rows)}. Optimiser "
         f"{esc(train.get('optimizer', '?'))}, learning rate {esc(train.get('lr', '?'))}, "
         f"batch {esc(train.get('batch_size', '?'))}, augmentation "
         f"{'on' if train.get('augment') else 'off'}."),
        ("Evaluation", f"Test {esc(metric)} on the held-out test images of each of "
         f"{n_folds} cross-validation fold{'s' if n_folds != 1 else ''} "
         f"(protocol <code>{esc(config.get('protocol', '?'))}</code>, split seed "
         f"{esc(options.get('seed', '?'))}); at n = {largest}: {pm(row.mean, row.sd)} "
         f"(mean ± s.d.).{comparison}"),
        ("Limits", "<ul>" + "".join(f"<li>{x}</li>" for x in limits) + "</ul>"),
    ]
    return '<dl class="card">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


# ------------------------------------------------------------------------------ run details
def _model_text(config: Mapping[str, Any], n_classes: int) -> str:
    kind = check_model(config.get("model", DEFAULT_MODEL))
    if kind.feature_set is not None:  # a baseline
        return f"The baseline <code>{esc(kind.name)}</code>: {esc(kind.about)}. "
    width = int(config.get("train", {}).get("width", 1))
    size = "a few thousand parameters" if width == 1 else f"{width}x the paper's filters"
    return ("The small CNN of Schouten et al. (Sci Rep 2021): six blocks of 3×3 convolution, "
            f"ReLU and 2×2 max-pooling ({4 * width}–{16 * width} filters), a dense layer of 32 "
            f"and a softmax over {n_classes} classes; {size}. ")


def run_details(run: Path, config: Mapping[str, Any], info, versions: Mapping[str, Any],
                records: list) -> str:
    done = [r for r in records if r.status == "done"]
    failed = [r for r in records if r.status != "done"]
    seconds = sum(r.seconds or 0.0 for r in done)
    finished = sorted(when(r.finished_at) for r in records if r.finished_at)
    jobs = [("run directory", str(run.resolve())), ("finished jobs", len(done)),
            ("failed jobs", len(failed)), ("training time (sum over jobs)", duration(seconds))]
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
        + (para("Last failure: <code>" + esc(failed[-1].error or "?") + "</code>")
           if failed else "")
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
        text = esc(str(v))
        return f"<code>{text}</code>" if k.split(".")[-1] in code_keys else text

    body = "".join(f"<tr><th>{esc(k)}</th><td>{value(k, v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><caption>{esc(title)}</caption><tbody>{body}</tbody></table>'

