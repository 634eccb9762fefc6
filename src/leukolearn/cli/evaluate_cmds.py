"""`leukolearn evaluate`: a model or a RUN's ensemble on labelled cells from anywhere."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from leukolearn.cli import app, checks
from leukolearn.errors import LeukolearnError
from leukolearn.cli.options import (AllowOutsideRootOpt, DatasetArg, LabelTableOpt, NoDedupeOpt,
                                    RootArg, split_csv)
from leukolearn.files import to_json
from leukolearn.predict.counts import CONFIDENCE
from leukolearn.runstore.resume import EVALUATIONS_DIR



@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="A model.safetensors (or the folder `train` wrote), "
                                 "or a RUN directory: the mean of its fold models."),
    dataset: str = DatasetArg,
    root: Path = RootArg,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for evaluation.json, cells.csv, "
                                       "per_type.csv and the figure (default for a RUN: "
                                       "RUN/evaluations/<dataset>-<folder>, shown by `report`)."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The dataset's classes "
                                           "(comma-separated) that are the model's positive "
                                           "class (default: classes named as the model's, e.g. "
                                           "blast, else the layout's blasts, else none)."),
    run_size: Optional[int] = typer.Option(None, "--run-size", help="RUN: training size of the "
                                           "ensemble (default: the largest)."),
    run_fold: Optional[int] = typer.Option(None, "--run-fold", help="RUN: only this fold's "
                                           "models (its replicates: the ensemble a sweep "
                                           "with --replicates K --ensemble scored), not every "
                                           "fold's."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Call a cell positive at "
                                              "this probability or above (default: as `predict`)."),
    target_sensitivity: Optional[float] = typer.Option(None, "--target-sensitivity",
                                                       help="Choose the threshold as `predict` does."),
    confidence: float = typer.Option(CONFIDENCE, "--confidence", help="Of the intervals: 0.95, not 95."),
    resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples for the AUC "
                                  "and F1 intervals."),
    seed: int = typer.Option(0, "--seed", help="Seeds the bootstrap."),
    label_table: Optional[Path] = LabelTableOpt,
    keep_duplicates: bool = NoDedupeOpt,
    allow_outside_root: bool = AllowOutsideRootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print evaluation.json instead of a summary."),
):
    """External validation: how a model does on labelled cells it never saw, e.g. another lab's.

    ROC-AUC with a bootstrap CI, sensitivity and specificity at the threshold, the share of
    each cell type called positive (false-positive rate per type), the calibration curve;
    a multiclass model also gets weighted F1 and the recall per class.
    """
    from leukolearn.cli.options import load_cells
    from leukolearn.predict.evaluate import evaluate as run_evaluation
    from leukolearn.predict.predictor import load_predictor
    from leukolearn.predict.threshold import is_run_dir

    checks.at_least(run_size, 1, "--run-size")
    checks.not_negative(run_fold, "--run-fold")
    checks.at_least(resamples, 100, "--resamples")
    checks.probability(threshold, "--threshold")
    checks.probability(target_sensitivity, "--target-sensitivity", zero=False)
    checks.probability(confidence, "--confidence", zero=False, one=False)
    run = is_run_dir(model)
    for value, name in ((run_size, "--run-size"), (run_fold, "--run-fold")):
        if value is not None and not run:
            raise LeukolearnError(f"{name} chooses among a RUN directory's models; {model} "
                                  "is not a run directory")
    # The model first: a missing or unreadable file is named as such, not asked for --out.
    predictor = load_predictor(model, size=run_size, fold=run_fold)
    if out is None:
        if not run:
            raise LeukolearnError("give --out: a model file has no run directory to keep "
                                  "its evaluations in")
        fold = "" if run_fold is None else f"-f{run_fold:02d}"
        out = model / EVALUATIONS_DIR / f"{default_name(dataset, root)}{fold}"
    checks.out_dir(out)
    cells = load_cells(dataset, root, size=predictor.config.input_size, multiclass=True,
                       label_table=label_table, keep_duplicates=keep_duplicates,
                       allow_outside_root=allow_outside_root, progress=not as_json)
    ev = run_evaluation(predictor, cells, layout=dataset, positive=split_csv(positive),
                        threshold=threshold, target_sensitivity=target_sensitivity,
                        confidence=confidence, n_resamples=resamples, seed=seed)
    paths = ev.write(out)
    if as_json:
        typer.echo(to_json(ev.to_dict()))
        return
    console = Console()
    for line in summary_lines(ev):
        console.print(line)
    console.print(f"{len(ev.ids)} cells -> {out}  ({', '.join(p.name for p in paths)})")


def default_name(dataset: str, root: Path) -> str:
    """An evaluation's folder name from the layout and the data's folder: "folder-pbc"."""
    name = f"{dataset}-{root.resolve().stem}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def summary_lines(ev) -> list[str]:
    pct = f"{ev.confidence:.0%}"
    lines = []
    name = "+".join(ev.positive_model)
    if ev.positive_model:
        t = ev.threshold
        lines.append(f"positive: the model's {name}; the dataset's "
                     f"{', '.join(ev.positive_data) or '(none)'}; threshold {t.value:.3g} ({t.how})")
        if ev.auc == ev.auc:  # not NaN
            lines.append(f"ROC-AUC {ev.auc:.3f} ({pct} CI {ev.auc_ci[0]:.3f}-{ev.auc_ci[1]:.3f})")
        for label, rate in (("sensitivity", ev.sensitivity), ("specificity", ev.specificity)):
            if rate is not None:
                lines.append(f"{label} {rate.value:.3f} ({rate.k}/{rate.n}; {pct} CI "
                             f"{rate.low:.3f}-{rate.high:.3f})")
        lines.append(f"called {name}, per cell type:")
        for cls, rate in ev.per_type.items():
            mark = " (positive)" if cls in ev.positive_data else ""
            lines.append(f"  {cls:<16} {rate.k:>5}/{rate.n:<5} {100 * rate.value:5.1f} % "
                         f"({100 * rate.low:.1f}-{100 * rate.high:.1f}){mark}")
    if ev.weighted_f1 == ev.weighted_f1:
        lines.append(f"weighted F1 {ev.weighted_f1:.3f} ({pct} CI {ev.weighted_f1_ci[0]:.3f}-"
                     f"{ev.weighted_f1_ci[1]:.3f}); recall per class: " + ", ".join(
                         f"{c} {r.value:.2f} ({r.n})" for c, r in ev.recall.items()))
    if ev.domain is not None and ev.domain.status != "unchecked":
        d = ev.domain
        lines.append(f"domain check: {d.status} the training domain (median distance "
                     f"{d.distance_ratio:.2f}x the cell limit; {d.outside_share:.0%} of the cells "
                     "beyond it)")
    lines.extend(f"note: {n}" for n in ev.notes)
    return lines
