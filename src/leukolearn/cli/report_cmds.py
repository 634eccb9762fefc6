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
    """Several runs (models, presets) side by side in the same folds: tables, Fig 4a, a page.

    summary.csv holds the summary's columns and a `method` column, one row per run and
    training size; paired.csv each run against the first, fold by fold (mean difference,
    its 95% interval, folds won / tied / lost, Wilcoxon p); methods_vs_size draws every
    run's median and spread per size; compare.html shows them on one offline page.
    """
    from leukolearn.analysis.comparison import load_comparison
    from leukolearn.analysis.metrics import chance_level, metric_label
    from leukolearn.files import write_bytes, write_text
    from leukolearn.report.analysis_figures import methods_figure
    from leukolearn.report.html_compare import render_comparison
    from leukolearn.report.style import save_figure

    names = [p.resolve().name for p in runs] if labels is None else \
        [n.strip() for n in labels.split(",")]
    checks.out_dir(out)
    comparison = load_comparison(runs, names, paired=paired)
    metric = comparison.metric_name
    figure = methods_figure(comparison.series(), metric_name=metric_label(metric),
                            chance_level=chance_level(metric))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "summary.csv", comparison.summary_csv())
    write_text(out / "paired.csv", comparison.paired_csv())
    written = save_figure(figure, out, "methods_vs_size")
    page = render_comparison(comparison, (out / "methods_vs_size.png").read_bytes())
    write_bytes(out / "compare.html", page.encode("utf-8"))  # bytes: no newline translation
    for path in [out / "summary.csv", out / "paired.csv", *written, out / "compare.html"]:
        typer.echo(str(path))
