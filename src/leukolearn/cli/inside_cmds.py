"""`explain`, `embed`, `focus` and `shortcut`: what a run's networks look at (Fig 4b),
how they represent cells (Fig 5), and whether the background alone gives the answer."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from leukolearn.cli import app, checks
from leukolearn.cli.options import (AllowOutsideRootOpt, DatasetArg, LabelTableOpt, NoDedupeOpt,
                                    PositiveOpt, RootArg, RunFoldsOpt, SWEEP, SizeOpt,
                                    parse_folds, parse_sizes,
                                    say_dropped_classes, split_csv)
from leukolearn.experiments.presets import FALLBACK_PRESET, JOBS
from leukolearn.explain.measures import DEFAULT_RULE

RunArg = typer.Argument(..., help="Run directory written by `leukolearn sweep`.")
OutOpt = typer.Option(None, "--out", help="Folder for the figures and tables "
                      "(default: RUN/figures).")
NoProgressOpt = typer.Option(False, "--no-progress", help="No progress bars.")


def say(message: str) -> None:
    typer.echo(message, err=True)


def _sizes(text: str) -> list[int]:
    return list(parse_sizes(text) or ())


def _open(run: Path, masks: Optional[Path] = None, progress: bool = True):
    from leukolearn.explain.runs import reload_cells
    from leukolearn.runstore.store import RunStore

    store = RunStore.open(run)
    return store, reload_cells(store, masks_dir=masks, progress=progress)


def _figures_dir(run: Path, out: Optional[Path]) -> Path:
    """--out, or RUN/figures: checked before the run's images are read and measured."""
    return checks.out_dir(out or run / "figures", default=out is None)


def _written(paths) -> None:
    for path in paths:
        typer.echo(str(path))


@app.command()
def explain(
    run: Path = RunArg,
    fold: int = typer.Option(0, "--fold", help="Fold whose test images and models to show."),
    sizes: str = typer.Option("10,50,100,200", "--sizes", help="Training sizes (columns); the "
                              "nearest sizes the run has are used."),
    images: Optional[str] = typer.Option(None, "--images", help="Image ids (rows), comma-"
                                         "separated. Default: a blast and one or two non-"
                                         "blasts of the fold's test set (a blast, a lymphocyte "
                                         "and a neutrophil when the run knows cell types)."),
    rule: str = typer.Option(DEFAULT_RULE, "--rule", help="LRP rule: epsilon (the paper's), "
                             "zplus, alpha2beta1 or alpha1beta0."),
    out: Optional[Path] = OutOpt,
    no_progress: bool = NoProgressOpt,
):
    """Fig 4b: saliency and LRP maps over training sizes.

    Saliency and LRP maps of a few test images under the fold's models trained
    on more and more images (PNG + SVG)."""
    from leukolearn.explain.lrp import get_rule
    from leukolearn.explain.runs import cell_types, default_rows, fold_jobs, image_rows
    from leukolearn.explain.measures import explain_grid
    from leukolearn.report.style import save_figure
    from leukolearn.report.explain_figures import explain_figure

    get_rule(rule)  # the options and --out before the run's images are read
    checks.not_negative(fold, "--fold")
    wanted = _sizes(sizes)
    out = _figures_dir(run, out)
    store, cells = _open(run, progress=not no_progress)
    jobs, _ = fold_jobs(store, fold, wanted)
    test = store.split(jobs[0].job_id)[2]
    types = cell_types(store, cells)
    if images:
        rows, not_test = image_rows(cells, split_csv(images) or [], test)
        for image_id in not_test:
            say(f"note: {image_id} is not a test image of fold {fold}: some of these "
                "models trained or early-stopped on it")
    else:
        rows = default_rows(test, cells.labels, types, cells.class_names)
    grid, notes = explain_grid(store, cells, fold, wanted, rows, types, rule)
    for note in notes:
        say(note)
    _written(save_figure(explain_figure(grid), out, f"fig4b_explain_fold{fold:02d}_{rule}"))


@app.command()
def embed(
    run: Path = RunArg,
    fold: int = typer.Option(0, "--fold", help="Fold of the tSNE panels."),
    sizes: str = typer.Option("10,50,100", "--sizes", help="Training sizes of the tSNE panels "
                              "(nearest available)."),
    out: Optional[Path] = OutOpt,
    no_progress: bool = NoProgressOpt,
):
    """Fig 5: tSNE of the last hidden layer, and class separation over sizes.

    tSNE maps of the 32-d last hidden layer on the images each model did not
    train on, one panel per size; and the class separation in that layer (silhouette,
    kNN accuracy) for every finished model of the run, over training size (figure + CSV).

    The separation table is kept in OUT/separation.csv: a second call measures only the
    models that finished since."""
    from leukolearn.explain.runs import column
    from leukolearn.explain.measures import embed_panels, separation_table
    from leukolearn.report.style import save_figure
    from leukolearn.report.explain_figures import separation_figure, tsne_figure

    checks.not_negative(fold, "--fold")
    wanted = _sizes(sizes)
    out = _figures_dir(run, out)
    store, cells = _open(run, progress=not no_progress)
    panels, notes = embed_panels(store, cells, fold, wanted)
    for note in notes:
        say(note)
    written = save_figure(tsne_figure(panels, cells.class_names, title=f"Fold {fold}: last "
                                      "hidden layer, tSNE"), out, f"fig5_tsne_fold{fold:02d}")
    start = time.perf_counter()
    table = separation_table(store, cells, out / "separation.csv", progress=not no_progress)
    say(f"separation: {table.measured} models measured, {table.reused} reused "
        f"({time.perf_counter() - start:.0f} s)")
    rows = table.rows
    written.append(out / "separation.csv")
    written += save_figure(separation_figure(column(rows, "size"), column(rows, "silhouette"),
                                             column(rows, "knn_accuracy"),
                                             column(rows, "chance"), column(rows, "dead")),
                           out, "separation_vs_size")
    _written(written)


@app.command()
def focus(
    run: Path = RunArg,
    masks: Optional[Path] = typer.Option(None, "--masks", help="ALL-IDB2: folder of expert "
                                         "masks. Without it, the stain segmentation is used."),
    out: Optional[Path] = OutOpt,
    no_progress: bool = NoProgressOpt,
):
    """Where the networks look: relevance on nucleus, cytoplasm, background.

    The share of positive LRP relevance (epsilon rule) on
    nucleus, cytoplasm and background of each model's test images, over training size
    (figure + CSV). Kept in OUT/focus_shares.csv: a second call measures only new models."""
    from leukolearn.explain.focus import REGIONS
    from leukolearn.explain.runs import column
    from leukolearn.explain.measures import focus_table
    from leukolearn.experiments.variants import segment_masks
    from leukolearn.report.style import save_figure
    from leukolearn.report.explain_figures import focus_figure

    out = _figures_dir(run, out)
    store, cells = _open(run, masks, progress=not no_progress)
    if masks is not None:
        label, region_masks = f"expert:{masks.resolve()}", cells.masks
    elif cells.masks is not None:  # a shortcut-variant run carries the masks it was cut with
        label, region_masks = "variant masks", cells.masks
    else:
        say("no --masks: using the stain segmentation (data.segment.segment_cells) for nucleus, "
            "cytoplasm and background")
        label, region_masks = "segmentation", segment_masks(cells.images, not no_progress)
    start = time.perf_counter()
    table = focus_table(store, cells, region_masks, label, out / "focus_shares.csv",
                        progress=not no_progress)
    say(f"focus: {table.measured} models measured, {table.reused} reused "
        f"({time.perf_counter() - start:.0f} s)")
    rows = table.rows
    shares = {r: column(rows, r) for r in REGIONS}
    source = "expert masks" if masks is not None else label.replace("segmentation",
                                                                    "stain segmentation")
    written = [out / "focus_shares.csv"]
    areas = {r: column(rows, f"area_{r}") for r in REGIONS}
    written += save_figure(focus_figure(column(rows, "size"), shares, areas,
                                        title=f"LRP (epsilon) on test images; {source}"),
                           out, "focus_vs_size")
    _written(written)


@app.command()
def shortcut(
    dataset: str = DatasetArg,
    root: Path = RootArg,
    out: Path = typer.Option(..., "--out", help="Folder for the three runs (original, "
                             "cell-only, background-only) and the report. Give it again to "
                             "resume."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="ALL-IDB2: folder of expert "
                                         "masks. Without it, the stain segmentation is used."),
    original: Optional[Path] = typer.Option(None, "--original", metavar="RUN",
                                            help="Run directory of a `leukolearn sweep` with "
                                            "the same images and settings (sizes and folds "
                                            "may differ): the original variant copies its "
                                            "finished jobs instead of training them again."),
    preset: Optional[str] = typer.Option(None, "--preset", help="As for `sweep` (default "
                                         f"{FALLBACK_PRESET}; quick for a first look).",
                                         rich_help_panel=SWEEP),
    folds: Optional[int] = typer.Option(None, "--folds", rich_help_panel=SWEEP),
    run_folds: Optional[str] = RunFoldsOpt,
    sizes: Optional[str] = typer.Option(None, "--sizes", rich_help_panel=SWEEP),
    seed: Optional[int] = typer.Option(None, "--seed", rich_help_panel=SWEEP),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", rich_help_panel=SWEEP),
    patience: Optional[int] = typer.Option(None, "--patience", rich_help_panel=SWEEP),
    size: Optional[int] = SizeOpt,
    positive: Optional[str] = PositiveOpt,
    label_table: Optional[Path] = LabelTableOpt,
    keep_duplicates: bool = NoDedupeOpt,
    allow_outside_root: bool = AllowOutsideRootOpt,
    jobs: int = typer.Option(JOBS, "--jobs", "-j", help="Trainings run in parallel."),
    no_progress: bool = NoProgressOpt,
):
    """Shortcut control: the cell alone vs the background alone.

    The same sweep on the original images, on the cell alone
    (background painted one neutral colour) and on the background alone (cell painted
    over), then the metric of each side by side (table, shortcut.json, shortcut.csv,
    shortcut_vs_size.png/svg in OUT). If the background alone scores about as well as the
    whole image, the networks need not look at the cell. With --original RUN the original
    images' jobs that an earlier sweep finished are copied from it, not trained again."""
    from leukolearn.experiments.presets import load_for_sweep, sweep_config
    from leukolearn.experiments.shortcut import run_shortcut, shortcut_summary, write_summary
    from leukolearn.experiments.variants import shortcut_masks
    from leukolearn.report.run_figures import make_shortcut_figures

    config = sweep_config(dataset, preset, options=dict(
        folds=folds, run_folds=parse_folds(run_folds), sizes=parse_sizes(sizes), seed=seed),
        train=dict(max_epochs=max_epochs, patience=patience))
    checks.workers(jobs)
    checks.out_dir(out)  # its three run directories are checked as the sweep makes them
    cells = load_for_sweep(config, dataset, root, positive=positive, size=size,
                           label_table=label_table, masks_dir=masks,
                           dedupe=not keep_duplicates, allow_outside_root=allow_outside_root,
                           progress=not no_progress)
    say_dropped_classes(cells, config)
    cut = shortcut_masks(cells, masks.resolve() if masks else None, progress=not no_progress)
    say(f"cutting cells from background with {cut.description}")
    if cut.dice:
        say(f"stain segmentation vs expert masks: median Dice {cut.dice['cell_median']:.2f} "
            f"(cell), {cut.dice['nucleus_median']:.2f} (nucleus)")
    # Each variant's dataset.json records how the images were loaded from cells.source.
    result = run_shortcut(cells, config, out, masks=cut, jobs=jobs, progress=not no_progress,
                          original=original)
    if original is not None:
        say(f"original: {result.reused} finished jobs copied from {original}, not trained again")
    say(f"painted with RGB {tuple(result.fill)}; background-only hides a disc of radius "
        f"{result.radius} px around each cell (not its outline: cell size is a class cue)")
    failed = sum(r.failed for r in result.reports.values())
    interrupted = any(r.interrupted for r in result.reports.values())
    summary = shortcut_summary(out, cut)
    written = write_summary(out, summary) + make_shortcut_figures(
        out, summary, cells, cut.masks, result.fill, result.radius)
    _print_shortcut(summary)
    _written(written)
    if interrupted:
        say("interrupted; finished jobs are saved. Run the same command again to resume.")
        sys.exit(130)
    if failed:
        say(f"{failed} jobs failed; run the same command again to retry them")
        sys.exit(1)


def _print_shortcut(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from leukolearn.experiments.variants import VARIANTS
    from leukolearn.experiments.shortcut import summary_table

    names = [v for v in VARIANTS if v in summary["variants"]]
    table = Table(title=f"median {summary.get('metric', 'metric')} over folds")
    table.add_column("size", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for row in summary_table(summary):
        table.add_row(str(row["size"]), *(
            "–" if row[f"{n}_median"] != row[f"{n}_median"]
            else f"{row[f'{n}_median']:.3f} (n={row[f'{n}_n']})" for n in names))
    Console(stderr=True).print(table)
