"""The `leukolearn` command: a thin layer over the Python API.

Each command group lives in its own module and registers itself on `app`; this module
only builds the app and turns errors into one line and exit code 2: a user's mistake (a
LeukolearnError), and a write that fails (OSError: a full disk, a read-only folder; a
SQLite error), which names the file and the cause. Every command checks its options and
outputs before any work (`cli.checks`), so a failed write is one that could not be
foreseen, and what finished before it is kept: files are written whole or not at all
(`files.atomic_write`), a sweep's jobs one transaction each.
"""
from __future__ import annotations

import errno
import inspect
import logging
import sqlite3
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


def _show_version(value: bool) -> None:
    if value:
        from leukolearn import __version__

        typer.echo(f"leukolearn {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print the version and exit."),
) -> None:
    pass  # the options of `leukolearn` itself, before any command


# Importing a command module registers its commands on `app` (order = order in --help).
from leukolearn.cli import (data_cmds, train_cmds, use_cmds, evaluate_cmds,  # noqa: E402,F401
                            sweep_cmds, report_cmds, inside_cmds)


def reflow(doc: str) -> str:
    """A docstring as paragraphs of one line each. Typer's Rich help keeps every line break
    of a docstring, so lines wrapped at the source's width came out ragged in a narrower
    terminal (a long line, then a stub); joined, Rich wraps each paragraph to the terminal."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


for _command in app.registered_commands:
    _command.help = reflow(_command.help or inspect.getdoc(_command.callback) or "")


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
    except OSError as exc:  # a write (or read) the checks could not foresee
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        sys.exit(2)
    except sqlite3.Error as exc:  # the run store names its path; a reader may not
        typer.echo(f"error: run database: {exc}", err=True)
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


# What to do, for the causes that can only be a write (a read that is refused, e.g. EACCES,
# gets no hint: it might be either).
_HINTS = {errno.ENOSPC: "free some space and run the same command again",
          errno.EDQUOT: "free some space and run the same command again"}


def os_error_line(exc: OSError) -> str:
    """'PATH: cause; what to do' on one line (an OSError's str() adds "[Errno 28]")."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}: "
    hint = _HINTS.get(exc.errno)
    return " ".join(f"{where}{cause}{'; ' + hint if hint else ''}".split())
