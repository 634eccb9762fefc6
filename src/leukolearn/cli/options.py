"""Options shared by several commands, and the one way the CLI loads a dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from leukolearn.data.cellimages import CellImages
from leukolearn.data.classes import AML_BLASTS, default_positive

DATA = "Data"

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
AllowOutsideRootOpt = typer.Option(
    False, "--allow-outside-root", help="manifest only: let the CSV name images outside its "
    "own folder (absolute paths, ../, symbolic links that lead out). Off by default, so that "
    "a manifest from elsewhere reads only files beside it and the dataset stays one folder "
    "you can move or share.", rich_help_panel=DATA)

def split_csv(text: Optional[str]) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def load_cells(dataset: str, root: Path, *, size: Optional[int] = None,
               positive: Optional[str] = None, multiclass: bool = False,
               label_table: Optional[Path] = None, masks: Optional[Path] = None,
               keep_duplicates: bool = False, allow_outside_root: bool = False,
               progress: bool = True) -> CellImages:
    """Load a dataset as the CLI's options describe it (binary unless --multiclass)."""
    from leukolearn.data.dataset import load_dataset

    if multiclass:
        chosen = None
    elif positive is None:
        chosen = default_positive(dataset)
    else:
        chosen = split_csv(positive)
    return load_dataset(
        dataset, root, size=size, positive=chosen,
        label_table=label_table, masks_dir=masks, dedupe=not keep_duplicates,
        allow_outside_root=allow_outside_root, progress=progress,
    )


def recorded_load_options(cells: CellImages, *, positive: Optional[str], multiclass: bool,
                          label_table: Optional[Path], keep_duplicates: bool) -> dict:
    """The options a run records so that its dataset can be loaded again exactly."""
    return {"size": cells.size, "positive": positive, "multiclass": multiclass,
            "label_table": str(label_table) if label_table else None,
            "dedupe": not keep_duplicates}
