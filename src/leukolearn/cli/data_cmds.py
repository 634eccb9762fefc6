"""`leukolearn datasets` and `leukolearn inspect`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from leukolearn.cli import app
from leukolearn.cli.options import (DatasetArg, LabelTableOpt, MasksOpt, NoDedupeOpt,
                                    PositiveOpt, RootArg, SizeOpt, split_csv)


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
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Count images per class, list image sizes, near-duplicate pairs and unreadable files.

    Bad files are listed, not fatal: inspect is how you find them.
    """
    from leukolearn.data.classes import default_positive
    from leukolearn.data.dataset import inspect_dataset

    report = inspect_dataset(
        dataset, root, size=size,
        positive=split_csv(positive) if positive else default_positive(dataset),
        label_table=label_table, masks_dir=masks, dedupe=not keep_duplicates,
        progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    _print_report(report)


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
        console.print(f"  [red]{item['path']}[/red]: {item['problem']}")
