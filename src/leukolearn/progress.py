"""The one progress bar: rich's, on stderr, with the same columns everywhere.

    for item in track(items, "Decoding 250 images", enabled=progress):
        ...

    with progress_bar(enabled=progress, extra=("{task.fields[note]}",)) as bar:
        task = bar.add_task("sweep", total=len(jobs), note="")
        bar.update(task, advance=1, note="f00-n10-s0: auc 0.912")

Columns: what is being done, the bar, done/total, time elapsed, time left; `extra` adds
format strings over the task (e.g. its fields) at the end. Bars go to stderr so that
stdout stays clean for what a command prints (`--json`, tables, file names), and are
transient by default: a finished bar disappears. Disabled (`enabled=False`: `--no-progress`,
`--json`, library calls) nothing is drawn and `track` returns the items themselves.

rich is imported on first use: `import leukolearn` and the CLI's start stay fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

T = TypeVar("T")


def progress_bar(*, enabled: bool = True, transient: bool = True,
                 extra: Sequence[str] = ()) -> "Progress":
    """A rich `Progress` (use it as a context manager) with leukolearn's columns on stderr;
    with `enabled` False it draws nothing and its methods still work."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        *(TextColumn(text) for text in extra),
        console=Console(stderr=True), transient=transient, disable=not enabled,
    )


def track(items: Iterable[T], description: str, *, total: int | None = None,
          enabled: bool = True, transient: bool = True) -> Iterable[T]:
    """`items`, advancing a bar (`progress_bar`) by one per item; `total` defaults to
    len(items). Disabled: `items` itself, untouched."""
    if not enabled:
        return items
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    return _tracked(items, description, total, transient)


def _tracked(items: Iterable[T], description: str, total: int, transient: bool) -> Iterator[T]:
    with progress_bar(transient=transient) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
