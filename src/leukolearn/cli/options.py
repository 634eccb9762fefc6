"""Options shared by several commands, and the one way the CLI loads a dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from leukolearn.data.cellimages import CellImages
from leukolearn.data.classes import AML_BLASTS
from leukolearn.errors import LeukolearnError

DATA = "Data"
SWEEP = "Sweep (default: the preset's)"

DatasetArg = typer.Argument(..., help="Dataset layout: see `leukolearn datasets`.")
RootArg = typer.Argument(..., help="Folder holding the images (or the manifest CSV).")
SizeOpt = typer.Option(None, "--size", help="Model input size in px (default: the layout's, "
                       "257 for ALL-IDB2 and folders, 400 for AML).", rich_help_panel=DATA)
PositiveOpt = typer.Option(None, "--positive", help="Binary task: these classes (comma-"
                           "separated) are positive, all others 'other'; the positive class "
                           "keeps their name (ig; several: MYO+MOB). aml-lmu: "
                           f"{','.join(AML_BLASTS)} by default, named blast.",
                           rich_help_panel=DATA)
MulticlassOpt = typer.Option(False, "--multiclass", help="Keep every class (aml-lmu: do not "
                             "merge into blast / other).", rich_help_panel=DATA)
LabelTableOpt = typer.Option(None, "--label-table", help="ALL-IDB2: CSV/XLSX mapping image "
                             "id to cell type, for the multiclass task.", rich_help_panel=DATA)
MasksOpt = typer.Option(None, "--masks", help="ALL-IDB2: folder of expert masks.",
                        rich_help_panel=DATA)
NoDedupeOpt = typer.Option(False, "--keep-duplicates", help="Keep near-duplicate images "
                           "(by default one of each pair is dropped).", rich_help_panel=DATA)
RunFoldsOpt = typer.Option(None, "--run-folds", metavar="<folds>",
                           help="Run only some folds: K for the first K, or '5-9' / '0,3,7' "
                           "for those (0-based), e.g. to split a sweep over sessions; the "
                           "same --out takes the others later.", rich_help_panel=SWEEP)
AllowOutsideRootOpt = typer.Option(
    False, "--allow-outside-root", help="manifest only: let the CSV name images outside its "
    "own folder (absolute paths, ../, symbolic links that lead out). Off by default, so that "
    "a manifest from elsewhere reads only files beside it and the dataset stays one folder "
    "you can move or share.", rich_help_panel=DATA)

def split_csv(text: Optional[str]) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def parse_sizes(text: Optional[str]) -> tuple[int, ...] | None:
    """--sizes: '10,20,50' or '10:200:10' (stop included) -> sizes."""
    if not text:
        return None
    try:
        if ":" in text:
            start, stop, step = (int(p) for p in text.split(":"))
            if step < 1:
                raise ValueError
            return tuple(range(start, stop + 1, step))
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise LeukolearnError(f"--sizes {text!r}: give e.g. '10,20,50' or '10:200:10'") from None


def parse_folds(text: Optional[str]) -> int | tuple[int, ...] | None:
    """--run-folds: 'K' (the first K folds), '5-9' or '0,3,7' (those folds, 0-based)."""
    if not text:
        return None
    try:
        if "-" in text:
            first, last = (int(p) for p in text.split("-"))
            if last < first:
                raise ValueError
            return tuple(range(first, last + 1))
        if "," in text:
            return tuple(int(p) for p in text.split(",") if p.strip())
        return int(text)
    except ValueError:
        raise LeukolearnError(f"--run-folds {text!r}: give K (the first K folds), "
                              "or folds as '5-9' or '0,3,7' (0-based)") from None


def say_dropped_classes(cells, config) -> None:
    """One line per class the sweep leaves out for having too few images (as
    `experiments.protocol.keep_classes` decides; dataset.json records them too)."""
    least = config.options.min_per_class
    for name, n in cells.class_counts().items():
        if n < least:
            typer.echo(f"class {name!r} left out: {n} image(s), fewer than the {least} a "
                       "class needs in this sweep", err=True)


def load_cells(dataset: str, root: Path, *, size: Optional[int] = None,
               positive: Optional[str] = None, multiclass: bool = False,
               label_table: Optional[Path] = None, masks: Optional[Path] = None,
               keep_duplicates: bool = False, allow_outside_root: bool = False,
               progress: bool = True) -> CellImages:
    """Load a dataset as the CLI's options describe it (binary unless --multiclass). The
    result's `source` records the options, for a run's dataset.json."""
    from leukolearn.data.dataset import load_dataset
    from leukolearn.experiments.presets import task_positive

    return load_dataset(
        dataset, root, size=size, positive=task_positive(dataset, positive, multiclass),
        label_table=label_table, masks_dir=masks, dedupe=not keep_duplicates,
        allow_outside_root=allow_outside_root, progress=progress,
    )
