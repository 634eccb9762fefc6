"""`leukolearn sweep` and `leukolearn summary`: the paper's training-size experiments."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from leukolearn.cli import app, checks
from leukolearn.cli.train_cmds import (LR_SCHEDULE_HELP, FreezeFeaturesOpt, InitFromOpt,
                                      InputNormOpt, check_head_start, checked_init_from)
from leukolearn.cli.options import (AllowOutsideRootOpt, DatasetArg, LabelTableOpt, NoDedupeOpt,
                                    PositiveOpt, RootArg, RunFoldsOpt, SWEEP, SizeOpt,
                                    parse_folds, parse_sizes,
                                    say_dropped_classes)
from leukolearn.experiments.methods import DEFAULT_MODEL
from leukolearn.experiments.presets import BATCH_MODELS, FALLBACK_PRESET, JOBS
from leukolearn.files import to_json

TRAINING = "Training (default: the preset's)"
RUNNING = "Running"

@app.command()
def sweep(
    dataset: str = DatasetArg,
    root: Path = RootArg,
    out: Path = typer.Option(..., "--out", help="Run directory. Give an existing one to resume it."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help=f"{FALLBACK_PRESET} (default), paper-aml-binary (default for "
        "aml-lmu), paper-multiclass, the robust-* and ensemble-* presets or quick. See "
        "`leukolearn presets`.",
        rich_help_panel=SWEEP),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="What to train: paper-cnn, "
                              "wide-cnn, or a baseline in the same folds (see `leukolearn models`).",
                              rich_help_panel=SWEEP),
    folds: Optional[int] = typer.Option(None, "--folds", help="Cross-validation folds.", rich_help_panel=SWEEP),
    run_folds: Optional[str] = RunFoldsOpt,
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Training sizes: '10,20,50' or "
                                        "'10:200:10' (start:stop:step, stop included).", rich_help_panel=SWEEP),
    test_size: Optional[int] = typer.Option(None, "--test-size", help="Test images per fold (AML protocol; "
                                            "the ALL protocol tests every image once).", rich_help_panel=SWEEP),
    val_size: Optional[int] = typer.Option(None, "--val-size", help="Validation images per fold (ALL: "
                                           "default the next fold's whole test set).", rich_help_panel=SWEEP),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds the splits and every job's training.", rich_help_panel=SWEEP),
    replicates: Optional[int] = typer.Option(None, "--replicates", help="Trainings per fold and size, "
                                             "each from its own initialisation.", rich_help_panel=SWEEP),
    ensemble: Optional[bool] = typer.Option(None, "--ensemble/--no-ensemble", help="Score the "
                                            "replicates of each fold and size as one model, the "
                                            "mean of their probabilities (needs --replicates 2 "
                                            "or more).", rich_help_panel=SWEEP),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", rich_help_panel=TRAINING),
    restarts: Optional[int] = typer.Option(None, "--restarts", help="Re-initialise a network "
                                           "that died (constant predictions) up to N times "
                                           "(paper presets: 0, the run is kept and counted).",
                                           rich_help_panel=TRAINING),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping: epochs without "
                                           "a better validation loss.", rich_help_panel=TRAINING),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="rmsprop (the paper's, two "
                                            "classes) or adam (its multiclass one).", rich_help_panel=TRAINING),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (the paper: 1e-3 with "
                                       "rmsprop, 1e-4 with adam).", rich_help_panel=TRAINING),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="Move the "
                                                    "training targets this far towards uniform, "
                                                    "0 to 0.5 (0: the paper).", rich_help_panel=TRAINING),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help=LR_SCHEDULE_HELP,
                                              rich_help_panel=TRAINING),
    input_norm: bool = typer.Option(False, "--input-norm", help=InputNormOpt.help,
                                    rich_help_panel=TRAINING),
    init: Optional[str] = typer.Option(None, "--init", help="'keras' (the paper) or 'torch'.", rich_help_panel=TRAINING),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help=InitFromOpt.help, rich_help_panel=TRAINING),
    freeze_features: bool = typer.Option(False, "--freeze-features", help=FreezeFeaturesOpt.help, rich_help_panel=TRAINING),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto.", rich_help_panel=TRAINING),
    size: Optional[int] = SizeOpt,
    positive: Optional[str] = PositiveOpt,
    label_table: Optional[Path] = LabelTableOpt,
    keep_duplicates: bool = NoDedupeOpt,
    allow_outside_root: bool = AllowOutsideRootOpt,
    jobs: int = typer.Option(JOBS, "--jobs", "-j", help="Trainings run in parallel (processes, "
                             "one thread each).", rich_help_panel=RUNNING),
    batch_models: int = typer.Option(BATCH_MODELS, "--batch-models", help="Train K networks at once in one "
                                     "process (for a GPU: tiny networks leave it idle). CPU: keep 1, "
                                     "the fused CPU kernels are faster.", rich_help_panel=RUNNING),
    executor: str = typer.Option("local", "--executor", help="local: worker processes on this "
                                 "machine. ray: Ray tasks, on a local Ray of --jobs CPUs or on "
                                 "the cluster of --ray-address (pip install "
                                 "\"leukolearn\\[ray]\").", rich_help_panel=RUNNING),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="A running Ray "
                                              "cluster, e.g. ray://head:10001 (with --executor "
                                              "ray; every node needs leukolearn installed).",
                                              rich_help_panel=RUNNING),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar.", rich_help_panel=RUNNING),
    as_json: bool = typer.Option(False, "--json", help="Also print the counts of jobs as JSON "
                                 "(stdout; the lines above go to stderr).", rich_help_panel=RUNNING),
):
    """Train one network per fold and training size, test each on its fold's test set.

    Every finished training is saved at once in the run directory; run the same command
    again to resume an interrupted sweep. Then: `leukolearn summary RUN`.
    """
    from leukolearn.experiments.presets import load_for_sweep, sweep_config
    from leukolearn.experiments.sweep import sweep_dataset

    # Every option, and --out, before the data are read and the run directory is made:
    # a mistyped one must not leave a run that the corrected command refuses.
    checks.training(init_from=init_from and str(init_from), freeze_features=freeze_features,
                    input_norm=input_norm, optimizer=optimizer, lr=lr,
                    label_smoothing=label_smoothing, lr_schedule=lr_schedule)
    head = checked_init_from(init_from)  # read once here; its path absolute in config.json
    config = sweep_config(dataset, preset, options=dict(
        folds=folds, run_folds=parse_folds(run_folds), sizes=parse_sizes(sizes), test_size=test_size,
        val_size=val_size, seed=seed, replicates=replicates, ensemble=ensemble), train=dict(
        max_epochs=max_epochs, patience=patience, init=init, device=device, restarts=restarts,
        optimizer=optimizer, lr=lr, label_smoothing=label_smoothing, lr_schedule=lr_schedule,
        input_norm=input_norm or None, init_from=head and str(head.path),
        freeze_features=freeze_features or None),
        model=model)
    checks.training(init=config.train.init, device=config.train.device)
    checks.workers(jobs, batch_models, executor, ray_address)
    checks.run_out(out)
    cells = load_for_sweep(config, dataset, root, positive=positive, size=size,
                           label_table=label_table, dedupe=not keep_duplicates,
                           allow_outside_root=allow_outside_root, progress=not no_progress)
    say_dropped_classes(cells, config)
    check_head_start(head, cells, config.train.width)  # before any job (each would fail on it)
    # dataset.json records how the images were loaded from cells.source, as from Python.
    report = sweep_dataset(cells, config, out, jobs=jobs, batch_models=batch_models,
                           progress=not no_progress, executor=executor,
                           ray_address=ray_address)

    if as_json:
        typer.echo(to_json({"run": str(out), "planned": report.planned, "done": report.done,
                            "skipped": report.skipped, "failed": report.failed,
                            "failures": dict(report.failures),
                            "interrupted": report.interrupted,
                            "seconds": round(report.seconds, 1)}))
    say(f"{report.done} jobs done, {report.skipped} already in {out}, {report.failed} failed "
        f"({report.seconds:.0f} s)")
    for job_id, message in report.failures:
        say(f"  failed {job_id}: {message}")
    if report.interrupted:
        say(f"interrupted; finished jobs are saved. Resume with the same command: {_command()}")
        sys.exit(130)  # not typer.Exit: main() runs click with standalone_mode=False
    if report.failed:
        say("run the same command again to retry the failed jobs")
        sys.exit(1)
    say(f"see the results: leukolearn summary {out}")


@app.command()
def summary(
    run: Path = typer.Argument(..., help="A run directory written by `leukolearn sweep`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the table as CSV here."),
):
    """Test metric per training size over folds: mean ± s.d., median, degenerate runs."""
    from leukolearn.runstore.store import RunStore
    from leukolearn.analysis.summary import summarize_store

    if csv_path is not None:
        checks.out_file(csv_path, "--csv")
    with RunStore.open(run) as store:
        result = summarize_store(store)
    if csv_path is not None:
        from leukolearn.files import write_text

        write_text(csv_path, result.to_csv())
    if as_json:
        typer.echo(result.to_json())
        return
    _print_table(result, run)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """What `leukolearn sweep --model` can train: the paper's CNN and the baselines."""
    from leukolearn.experiments.methods import MODELS

    if as_json:
        typer.echo(to_json({m.name: m.about for m in MODELS.values()}))
        return
    for m in MODELS.values():
        typer.echo(f"{m.name:<20} {m.about}")


@app.command()
def presets():
    """The named sweep settings `leukolearn sweep --preset` accepts, as JSON."""
    import json

    from leukolearn.experiments.presets import PRESETS, get_preset

    typer.echo(json.dumps({name: {"about": desc, **get_preset(name).to_dict()}
                           for name, (desc, _) in PRESETS.items()}, indent=2))


def say(message: str) -> None:
    typer.echo(message, err=True)


def _print_table(result, run: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float) -> str:
        return "–" if x != x else f"{x:.3f}"

    # The restarted column only when a job was restarted: most runs (restarts 0) have none,
    # and the table should stay narrow enough for a terminal.
    restarted = any(r.n_restarted for r in result.rows)
    table = Table(title=f"{run}: test {result.metric_name} per training size")
    cols = ["size", "n", "mean ± s.d.", "median", "min", "max", "degenerate", "failed"]
    for col in cols + (["restarted"] if restarted else []):
        table.add_column(col, justify="right")
    for r in result.rows:
        cells = [str(r.size), str(r.n_jobs), f"{fmt(r.mean)} ± {fmt(r.sd)}", fmt(r.median),
                 fmt(r.min), fmt(r.max), str(r.n_degenerate), str(r.n_failed)]
        if restarted:
            cells.append(str(r.n_restarted))
        table.add_row(*cells)
    Console().print(table)


def _command() -> str:
    import shlex

    return "leukolearn " + shlex.join(sys.argv[1:]) if sys.argv and "leukolearn" in sys.argv[0] \
        else "leukolearn sweep ... (same options)"
