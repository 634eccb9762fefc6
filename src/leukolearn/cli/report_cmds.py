"""`leukolearn figures`: the paper's figures from a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from leukolearn.cli import app

RunArg = typer.Argument(..., help="Run directory written by `leukolearn sweep`.")


@app.command()
def figures(
    run: Path = RunArg,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the figures "
                                       "(default: RUN/figures)."),
):
    """Draw the paper's figures (PNG and SVG) from a run's store: loss curves (Fig 3a),
    mean ROC (3b), metric vs training size (4a / 6), confusion matrix (7b).

    Works on a sweep that is still running: it draws what has finished.
    """
    from leukolearn.report.run_figures import make_run_figures

    written = make_run_figures(run, out)
    if not written:
        typer.echo(f"{run}: no finished jobs yet, nothing to draw")
        return
    for path in written:
        typer.echo(str(path))
