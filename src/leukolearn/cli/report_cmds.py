"""`leukolearn figures` and `leukolearn report`: the paper's figures and an HTML report
from a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from leukolearn.analysis import curves  # the report's defaults (numbers only, no figures)
from leukolearn.cli import app, checks

RunArg = typer.Argument(..., help="Run directory written by `leukolearn sweep`.")


@app.command()
def figures(
    run: Path = RunArg,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the figures "
                                       "(default: RUN/figures)."),
):
    """The paper's figures (PNG + SVG) from a run: Figs 3a, 3b, 4a/6, 7b.

    Drawn from the run's store alone: loss curves (Fig 3a),
    mean ROC (3b), metric vs training size (4a / 6), confusion matrix (7b).

    Works on a sweep that is still running: it draws what has finished.
    """
    from leukolearn.report.run_figures import make_run_figures

    checks.out_dir(out or run / "figures", default=out is None)
    written = make_run_figures(run, out)
    if not written:
        typer.echo(f"{run}: no finished jobs yet, nothing to draw")
        return
    for path in written:
        typer.echo(str(path))


@app.command()
def report(
    run: Path = RunArg,
    out: Optional[Path] = typer.Option(None, "--out", help="The HTML file to write "
                                       "(default: RUN/report.html)."),
    target: float = typer.Option(curves.TARGET, "--target", help="Learning-curve target: the test "
                                 "metric whose training size the report estimates."),
    n_boot: int = typer.Option(curves.N_BOOT, "--n-boot", help="Bootstrap resamples of the folds for "
                               "the learning curve's interval (as `plan`; fewer is faster)."),
):
    """One self-contained HTML page about a run, with a model card.

    Contents: config, dataset fingerprint and
    versions, the summary table beside the paper's numbers, every figure (paper figures,
    learning curve, calibration, and the explain/embed/focus/shortcut figures found in the
    run directory) and a model card.

    Opens offline (images embedded, nothing fetched); on a running sweep, reports what finished.
    """
    from leukolearn.report.html import report_path, write_report

    checks.probability(target, "--target", zero=False)
    checks.at_least(n_boot, 1, "--n-boot")
    checks.out_file(report_path(run, out), "--out", default=out is None)
    path = write_report(run, out, target=target, n_boot=n_boot)
    typer.echo(str(path))


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories of the same protocol and folds "
                                      "(e.g. one per --model or --preset)."),
    out: Path = typer.Option(..., "--out", help="Folder for summary.csv and methods_vs_size."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated names of the "
                                         "runs (default: their folder names)."),
    paired: bool = typer.Option(False, "--paired", help="Per training size, only the folds "
                                "every run with that size has finished (the same test sets)."),
):
    """Several runs (models, presets) side by side in the same folds: table and Fig 4a.

    summary.csv holds the summary's columns and a `method` column, one row per run and
    training size; methods_vs_size draws every run's median and spread per size.
    """
    from leukolearn.analysis.metrics import chance_level, metric_label
    from leukolearn.analysis.ensemble import scored_run
    from leukolearn.analysis.summary import compare_csv, job_key, paired_records, summarize
    from leukolearn.errors import LeukolearnError
    from leukolearn.files import write_text
    from leukolearn.report.analysis_figures import methods_figure
    from leukolearn.report.style import save_figure
    from leukolearn.runstore.store import RunStore

    names = [p.resolve().name for p in runs] if labels is None else \
        [n.strip() for n in labels.split(",")]
    if len(names) != len(runs) or len(set(names)) != len(names):
        raise LeukolearnError(f"--labels: give {len(runs)} distinct names, one per run")
    checks.out_dir(out)
    records, splits, metric_names = {}, {}, {}
    for name, run in zip(names, runs):
        with RunStore.open(run) as opened:
            store = scored_run(opened)  # an ensemble run: one record per fold and size
            records[name] = store.results(include_failed=True)
            splits[name] = {job_key(r): tuple(store.split(r.job_id)[2])
                            for r in records[name] if r.status == "done"}
            metric_names[name] = store.config_dict.get("metric")
    if paired:
        records = paired_records(records)
    summaries = {name: summarize(recs, metric_names[name]) for name, recs in records.items()}
    series = {name: ([r.size for r in recs if r.status == "done"],
                     [r.metric for r in recs if r.status == "done"])
              for name, recs in records.items()}
    metrics = {s.metric_name for s in summaries.values()}
    if len(metrics) > 1:
        raise LeukolearnError(f"the runs score different metrics ({', '.join(sorted(metrics))})")
    shared = set.intersection(*(set(s) for s in splits.values()))
    if any(len({tuple(map(int, splits[n][j])) for n in names}) > 1 for j in shared):
        raise LeukolearnError("the runs test the same job on different images: not the same "
                              "folds (same dataset, protocol and --seed needed)")
    metric = metrics.pop()
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "summary.csv", compare_csv(summaries))
    written = save_figure(methods_figure(series, metric_name=metric_label(metric),
                                         chance_level=chance_level(metric)), out, "methods_vs_size")
    for path in [out / "summary.csv", *written]:
        typer.echo(str(path))
