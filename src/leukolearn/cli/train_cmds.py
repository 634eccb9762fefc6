"""`leukolearn train` and `leukolearn demo` (`predict` lives in use_cmds)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

import leukolearn.demo as demo_defaults  # torch-free at import: run_demo imports it
from leukolearn.cli import app, checks
from leukolearn.files import to_json
from leukolearn.cli.options import (AllowOutsideRootOpt, DatasetArg, LabelTableOpt, MasksOpt,
                                    MulticlassOpt, NoDedupeOpt, PositiveOpt, RootArg, SizeOpt,
                                    load_cells)
from leukolearn.experiments.single import (MIN_PER_CLASS, PAPER_TEST, PAPER_VAL, VAL_SHARE,
                                           SplitSizes)
from leukolearn.training.config import TrainConfig

TRAINING = "Training"
SPLIT = "Split"

# Every default is the config class's own (TrainConfig, SplitSizes): one default, one place.

# `train` and `sweep` take these two (sweep_cmds imports them).
InitFromOpt = typer.Option(None, "--init-from", help="Start from this model's weights (a "
                           "model.safetensors, or a folder `train --out` wrote): its conv "
                           "blocks and hidden layer, its classifier too where the classes "
                           "are the same. The images must be of its input size.",
                           rich_help_panel=TRAINING)
FreezeFeaturesOpt = typer.Option(False, "--freeze-features", help="With --init-from: keep its "
                                 "conv blocks fixed, train only the dense layers.",
                                 rich_help_panel=TRAINING)
LR_SCHEDULE_HELP = ("constant (the paper) or plateau: halve the learning rate when the "
                    "validation loss stalls for a fifth of --patience.")
InputNormOpt = typer.Option(False, "--input-norm", help="Standardise each colour channel by the "
                            "training images' mean and s.d. while training (the paper: pixel "
                            "/ 255); the model file stays an ordinary one.",
                            rich_help_panel=TRAINING)


def checked_init_from(path: Optional[Path]):
    """--init-from read and checked before any work (a missing, foreign or damaged file is
    one line naming it); the HeadStart (its path absolute, so that a resume from another
    folder compares equal), or None."""
    from leukolearn.training.head_start import load_head_start

    return load_head_start(path) if path is not None else None


def check_head_start(head, cells, width: int = 1) -> None:
    """--init-from against the images as loaded (their size) and the network's `width`,
    before a training or a sweep: in a sweep every job would fail on it one by one."""
    if head is not None:
        from leukolearn.model.cnn import ModelConfig, widened_filters
        from leukolearn.training.head_start import check_compatible

        check_compatible(head, ModelConfig(input_size=cells.size, n_classes=cells.n_classes,
                                           class_names=cells.class_names,
                                           filters=widened_filters(width)))


@app.command()
def train(
    dataset: str = DatasetArg,
    root: Path = RootArg,
    out: Path = typer.Option(..., "--out", help="Folder for model, history and test metrics."),
    train_size: int = typer.Option(SplitSizes.train, "--train-size", help="Training images.", rich_help_panel=SPLIT),
    val_size: Optional[int] = typer.Option(SplitSizes.val, "--val-size", help=f"Validation images (early stopping). Default {PAPER_VAL} (ALL-IDB2: the next fold's test set, as in the paper and sweep); more classes: at least {MIN_PER_CLASS} a class or {VAL_SHARE:.0%} of it, whichever is smaller.", rich_help_panel=SPLIT),
    test_size: Optional[int] = typer.Option(SplitSizes.test, "--test-size", help=f"Test images. Default {PAPER_TEST}; more classes: at least {MIN_PER_CLASS} a class. Two classes: half from each (ALL-IDB2: the paper's fold).", rich_help_panel=SPLIT),
    fold: int = typer.Option(0, "--fold", help="Which of the disjoint test sets of that size is the test set.", rich_help_panel=SPLIT),
    seed: int = typer.Option(0, "--seed", help="Seeds the split, the initialisation and the augmentation.", rich_help_panel=TRAINING),
    max_epochs: int = typer.Option(TrainConfig.max_epochs, "--max-epochs", rich_help_panel=TRAINING),
    patience: int = typer.Option(TrainConfig.patience, "--patience", help="Early stopping: epochs without a better validation loss.", rich_help_panel=TRAINING),
    label_smoothing: float = typer.Option(TrainConfig.label_smoothing, "--label-smoothing", help="Move the training targets this far towards uniform, 0 to 0.5 (0: the paper).", rich_help_panel=TRAINING),
    lr_schedule: str = typer.Option(TrainConfig.lr_schedule, "--lr-schedule", help=LR_SCHEDULE_HELP, rich_help_panel=TRAINING),
    input_norm: bool = InputNormOpt,
    init: str = typer.Option(TrainConfig.init, "--init", help="'keras' (Glorot, zero bias: the paper) or 'torch'.", rich_help_panel=TRAINING),
    restarts: int = typer.Option(TrainConfig.restarts, "--restarts", help="Re-initialise a network that died (constant predictions) up to N times; 0 keeps it, as the paper did.", rich_help_panel=TRAINING),
    no_augment: bool = typer.Option(False, "--no-augment", help="Switch off flips and rotations.", rich_help_panel=TRAINING),
    ensemble: int = typer.Option(1, "--ensemble", help="Train K networks on the split, each from its own initialisation, and save them as one model file that predicts the mean of their probabilities (ALL-IDB2: 5 with --restarts 3 is the few-image recipe of the ensemble-* presets). 1: one network, as the paper.", rich_help_panel=TRAINING),
    width: int = typer.Option(TrainConfig.width, "--width", help="Filters per conv block, times the paper's (1: its 7,210-parameter CNN; 4: sweep --model wide-cnn's).", rich_help_panel=TRAINING),
    init_from: Optional[Path] = InitFromOpt,
    freeze_features: bool = FreezeFeaturesOpt,
    device: str = typer.Option(TrainConfig.device, "--device", help="cpu, cuda or auto.", rich_help_panel=TRAINING),
    size: Optional[int] = SizeOpt,
    positive: Optional[str] = PositiveOpt,
    multiclass: bool = MulticlassOpt,
    label_table: Optional[Path] = LabelTableOpt,
    masks: Optional[Path] = MasksOpt,
    keep_duplicates: bool = NoDedupeOpt,
    allow_outside_root: bool = AllowOutsideRootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the test metrics as JSON."),
):
    """Train one network (or --ensemble K) with the paper's settings on one split and test it.

    Writes model.safetensors, history.json, metrics.json, split.json and
    train_config.json into --out.
    """
    from leukolearn.experiments.single import default_train_config, train_and_evaluate

    # Every option and --out before the images are read and a network trained: a training
    # must never be lost to an output that cannot be written.
    split = SplitSizes(train_size, val_size, test_size)
    checks.training(max_epochs=max_epochs, patience=patience, init=init, device=device,
                    restarts=restarts, init_from=init_from and str(init_from),
                    freeze_features=freeze_features, width=width,
                    label_smoothing=label_smoothing, lr_schedule=lr_schedule,
                    input_norm=input_norm)
    checks.at_least(ensemble, 1, "--ensemble")
    head = checked_init_from(init_from)
    checks.not_negative(seed, "--seed")
    checks.not_negative(fold, "--fold")
    checks.out_dir(out)
    cells = load_cells(dataset, root, size=size, positive=positive, multiclass=multiclass,
                       label_table=label_table, masks=masks, keep_duplicates=keep_duplicates,
                       allow_outside_root=allow_outside_root, progress=not as_json)
    check_head_start(head, cells, width)
    config = default_train_config(cells, max_epochs=max_epochs, patience=patience, init=init,
                                  augment=not no_augment, device=device,
                                  restarts=restarts, init_from=head and str(head.path),
                                  freeze_features=freeze_features, width=width,
                                  label_smoothing=label_smoothing, lr_schedule=lr_schedule,
                                  input_norm=input_norm)
    metrics = train_and_evaluate(cells, split, config, seed=seed, fold=fold, out_dir=out,
                                 progress=not as_json, ensemble=ensemble)
    _report_metrics(metrics, out, as_json)


@app.command()
def demo(  # the defaults are run_demo's; a test checks them
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for images, model and metrics."),
    per_class: int = typer.Option(demo_defaults.PER_CLASS, "--per-class",
                                  help="Synthetic images per class."),
    seed: int = typer.Option(0, "--seed"),
    max_epochs: int = typer.Option(demo_defaults.MAX_EPOCHS, "--max-epochs"),
    patience: int = typer.Option(demo_defaults.PATIENCE, "--patience"),
):
    """End to end on synthetic cells: write images, load them, train, test, predict.

    Needs no data of your own; takes a few minutes on a laptop CPU. Ends by predicting the
    blast fraction of three synthetic patients whose true fractions are known.
    """
    from leukolearn.demo import run_demo

    checks.at_least(per_class, 5, "--per-class")  # 4 test + 4 validation + training images
    checks.training(max_epochs=max_epochs, patience=patience)
    checks.not_negative(seed, "--seed")
    checks.out_dir(out)
    start = time.perf_counter()
    result = run_demo(out, per_class=per_class, seed=seed, max_epochs=max_epochs,
                      patience=patience)
    _report_metrics(result.metrics, out / "model", as_json=False)
    console = Console()
    for sample in result.samples:
        console.print(f"{sample.sample}: {sample.blast_fraction:.0%} blasts ({sample.n_blasts}/"
                      f"{sample.n_cells}, 95% CI {sample.ci_low:.0%}-{sample.ci_high:.0%}, true "
                      f"{result.true_fractions[sample.sample]:.0%}): {sample.call} vs the 20% line")
    console.print(f"predictions in {out / 'predictions'}; demo took "
                  f"{time.perf_counter() - start:.0f} s")


def _report_metrics(metrics: dict, out: Path, as_json: bool) -> None:
    if as_json:
        typer.echo(to_json(metrics))  # as metrics.json: an undefined AUC is null, not NaN
        return
    console = Console()
    from leukolearn.analysis.metrics import metric_label

    key, name = ("roc_auc", "auc") if "roc_auc" in metrics else ("weighted_f1", "weighted_f1")
    headline = f"test {metric_label(name, capital=False)} {metrics[key]:.3f}"
    low, high = metrics.get(f"{key}_ci") or (None, None)
    if low is not None and low == low:  # NaN: no resample had both classes
        headline += f" (95% CI {low:.3f}-{high:.3f})"
    members = metrics.get("members")
    trained = (f"{len(members)} networks, best epochs "
               f"{', '.join(str(m['best_epoch']) for m in members)}" if members else
               f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}")
    console.print(f"[bold]{headline}[/bold], accuracy {metrics['accuracy']:.3f} on "
                  f"{metrics['n_test']} test images; {trained} ({metrics['seconds']:.0f} s)")
    if metrics.get("degenerate"):
        console.print("[yellow]warning: the network predicts a constant (dead ReLUs); "
                      "try --restarts 3, another --seed or --init[/yellow]")
    elif metrics.get("restarts"):
        console.print(f"{metrics['restarts']} dead network(s) re-initialised before this one")
    console.print(f"model and results in {out}")
