"""The `leukolearn` command: a thin layer over the Python API.

Each command group lives in its own module and registers itself on `app`; this module
only builds the app and turns user errors into one line and exit code 2.
"""
from __future__ import annotations

import logging
import sys
import warnings

import typer

from leukolearn.errors import LeukolearnError

app = typer.Typer(
    name="leukolearn",
    help=(
        "Train the small CNN of Schouten et al. (Sci Rep 2021) to find blasts in single-cell "
        "blood smear images, and measure how many annotated images that takes."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Importing a command module registers its commands on `app` (order = order in --help).
from leukolearn.cli import (data_cmds, train_cmds, use_cmds, sweep_cmds,  # noqa: E402,F401
                            report_cmds, inside_cmds)


def _print_warning(message, *_args, **_kwargs) -> None:
    typer.echo(f"warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: user errors become `error: ...` and exit 2,
    warnings one `warning: ...` line each."""
    # tifffile logs what it finds wrong in a file; our one-line error already says it.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            app(args=argv, standalone_mode=False)
    except LeukolearnError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        # Recognised by shape, not by class: newer typer vendors click (typer._click), so
        # `import click` may fail and click.ClickException is not the class raised.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
