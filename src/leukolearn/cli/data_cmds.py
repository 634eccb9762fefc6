"""`leukolearn datasets` and `leukolearn inspect`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leukolearn.cli import app
from leukolearn.cli.options import (AllowOutsideRootOpt, DatasetArg, LabelTableOpt, MasksOpt,
                                    NoDedupeOpt, PositiveOpt, RootArg, SizeOpt, split_csv)


@app.command()
def datasets(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List the dataset layouts leukolearn can read."""
    from leukolearn.data.dataset import list_datasets

    layouts = list_datasets()
    if as_json:
        typer.echo(json.dumps(layouts, indent=2))
        return
    table = Table("layout", "what it reads")
    for name, description in layouts.items():
        table.add_row(name, description)
    Console().print(table)


@app.command()
def inspect(
    dataset: str = DatasetArg,
    root: Path = RootArg,
    size: Optional[int] = SizeOpt,
    positive: Optional[str] = PositiveOpt,
    label_table: Optional[Path] = LabelTableOpt,
    masks: Optional[Path] = MasksOpt,
    keep_duplicates: bool = NoDedupeOpt,
    allow_outside_root: bool = AllowOutsideRootOpt,
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too (tiny, "
                                "elongated or multi-page images, near-duplicates under "
                                "different labels)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Count images per class, list image sizes, near-duplicate pairs, unreadable files,
    label conflicts (one cell under two labels) and warnings.

    Problems are listed, not fatal: inspect is how you find them all at once, where
    training stops at the first.

    Exit status: 0 when the dataset can be trained on as it is; 1 when it lists bad files
    or label conflicts (with --strict, warnings too); 2 when it cannot be inspected at all
    (unknown layout, missing folder, wrong option).
    """
    from leukolearn.data.classes import default_positive
    from leukolearn.data.dataset import inspect_dataset

    report = inspect_dataset(
        dataset, root, size=size,
        positive=split_csv(positive) if positive else default_positive(dataset),
        label_table=label_table, masks_dir=masks, dedupe=not keep_duplicates,
        allow_outside_root=allow_outside_root, progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report)
    if report["bad_files"] or report["label_conflicts"] or (strict and report["warnings"]):
        sys.exit(1)  # not typer.Exit: main() runs click with standalone_mode=False


def _print_report(report: dict) -> None:
    console = Console()
    console.print(f"[bold]{report.get('n_images', 0)}[/bold] images")
    counts = Table("class", "images")
    for name, n in report.get("class_counts", {}).items():
        counts.add_row(str(name), str(n))
    console.print(counts)
    sizes = report.get("image_sizes", report.get("original_sizes", {}))
    if sizes:
        console.print("image sizes: " + ", ".join(f"{k}: {v}" for k, v in sizes.items()))
    pairs = report.get("duplicate_pairs", [])
    console.print(f"{len(pairs)} near-duplicate pair(s)")
    for pair in pairs:
        console.print("  " + "  ~  ".join(str(p) for p in pair[:2])
                      + (f"  (distance {pair[2]})" if len(pair) > 2 else ""))
    bad = report.get("bad_files", [])
    console.print(f"{len(bad)} unreadable file(s)")
    for item in bad:
        console.print(f"  [red]{escape(item['path'])}[/red]: {escape(item['problem'])}",
                      highlight=False)
    conflicts = report.get("label_conflicts", [])
    console.print(f"{len(conflicts)} label conflict(s)")
    for item in conflicts:
        console.print(f"  [red]{escape(item['paths'][1])}[/red]: {escape(item['problem'])}",
                      highlight=False)
    notes = report.get("warnings", [])
    console.print(f"{len(notes)} warning(s)")
    for line in notes:
        console.print(f"  [yellow]warning[/yellow]: {escape(line)}", highlight=False)
