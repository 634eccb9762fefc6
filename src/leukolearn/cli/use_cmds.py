"""Using trained models: `predict`, `calibrate`, `plan` and `export`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from leukolearn.analysis import curves
from leukolearn.cli import app, checks
from leukolearn.files import to_json
from leukolearn.cli.options import (AllowOutsideRootOpt, DatasetArg, LabelTableOpt, MasksOpt, NoDedupeOpt, PositiveOpt,
                                    RootArg, SizeOpt, load_cells, split_csv)
# Defaults from torch-free modules (predictor.py imports torch: not at the CLI's start)
from leukolearn.model.onnx import DEFAULT_OPSET
from leukolearn.predict.counts import CONFIDENCE, DIAGNOSTIC_THRESHOLD
from leukolearn.predict.domain import OUTSIDE_NOTE

THRESHOLD = "Threshold"
SAMPLES = "Samples"


@app.command()
def predict(
    model: Path = typer.Argument(..., help="A model.safetensors (or the folder `train` wrote), "
                                 "or a RUN directory: the mean of its fold models."),
    paths: List[Path] = typer.Argument(..., help="Image files or folders (one sample per "
                                       "subfolder), or one manifest CSV with a path column."),
    out: Path = typer.Option(..., "--out", help="Folder for cells.csv, samples.csv, summary.json."),
    size: Optional[int] = typer.Option(None, "--size", help="RUN: training size of the ensemble "
                                       "(default: the largest)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Call a cell a blast at "
                                              "this probability or above.", rich_help_panel=THRESHOLD),
    target_sensitivity: Optional[float] = typer.Option(
        None, "--target-sensitivity", help="Choose the threshold for this sensitivity (RUN: on its "
        "pooled test-fold predictions; model: stored by `calibrate`).", rich_help_panel=THRESHOLD),
    positive: Optional[str] = typer.Option(None, "--positive", help="Classes counted as "
                                           "positive (default: the model's: 'blast', or the "
                                           "class a binary model was trained to find).",
                                           rich_help_panel=THRESHOLD),
    diagnostic_threshold: float = typer.Option(DIAGNOSTIC_THRESHOLD, "--diagnostic-threshold", help="Blast "
                                               "fraction a sample is flagged at.", rich_help_panel=SAMPLES),
    sample_col: Optional[str] = typer.Option(None, "--sample-col", help="Manifest CSV: column "
                                             "naming each image's sample.", rich_help_panel=SAMPLES),
    confidence: float = typer.Option(CONFIDENCE, "--confidence", help="Of the intervals, as a "
                                     "fraction: 0.95, not 95.", rich_help_panel=SAMPLES),
    raw_count: bool = typer.Option(False, "--raw-count", help="Do not correct the blast fraction "
                                   "for the classifier's error rates (the adjusted count); the "
                                   "call is then on the raw count.", rich_help_panel=SAMPLES),
    lab_calibrated: bool = typer.Option(False, "--lab-calibrated", help="The model was "
                                        "calibrated (`calibrate --part all`) on labelled cells "
                                        "of the lab these samples come from: call samples "
                                        "outside the training domain too.", rich_help_panel=SAMPLES),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images (listed in "
                                  "summary.json) instead of stopping at the first."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json instead of a table."),
):
    """Blast probability per cell, blast fraction per sample with a 95% CI and a flag.

    Where the classifier's error rates at the threshold are known from held-out labelled
    cells (a RUN, a sweep's weights file, a calibrated model), the fraction is also
    corrected for them (adjusted count) and the flag is set on the corrected interval.
    Writes cells.csv, samples.csv and summary.json into --out (and reliability.png
    when calibration data are available).
    """
    from leukolearn.predict.predictor import PredictOptions, predict_samples

    # The options and --out before the images are read and predicted.
    checks.at_least(size, 1, "--size")
    checks.probability(threshold, "--threshold")
    checks.probability(target_sensitivity, "--target-sensitivity", zero=False)
    # Fractions in (0, 1), and a percentage refused with the fraction to give
    # ("--confidence 95": give 0.95), as PredictOptions checks them.
    checks.probability(diagnostic_threshold, "--diagnostic-threshold", zero=False, one=False)
    checks.probability(confidence, "--confidence", zero=False, one=False)
    checks.out_dir(out)
    options = PredictOptions(size=size, threshold=threshold, target_sensitivity=target_sensitivity,
                             positive=split_csv(positive), diagnostic_threshold=diagnostic_threshold,
                             confidence=confidence, sample_col=sample_col, skip_bad=skip_bad,
                             raw_count=raw_count, lab_calibrated=lab_calibrated)
    report = predict_samples(model, paths, options, progress=not as_json)
    report.write(out)
    if as_json:
        typer.echo(to_json(report.summary()))  # what summary.json holds
        return
    from rich.table import Table

    console = Console()
    t = report.threshold
    console.print(f"threshold {t.value:.3f} ({t.how})")
    if report.calibration is not None:
        console.print(f"calibration: ECE {report.calibration.ece:.3f} on {report.calibration.n} "
                      "labelled cells")
    rates = report.error_rates
    name = report.positive_name  # "blast", "ig": the class the model counts
    if rates is not None:
        console.print(f"error rates at the threshold: TPR {rates.tpr:.3f} on {rates.n_positive} "
                      f"{name} cells, FPR {rates.fpr:.3f} on {rates.n_negative} other cells "
                      f"({rates.source})")
    if not report.adjusted:
        console.print(f"raw count, not corrected for error rates: "
                      f"{report.adjusted_count_info()['why_not']}")
    from rich import box

    # Percent numbers without "%", the interval in the same cell, no vertical rules: the
    # table fits an 80-column terminal.
    # :g, not :.0%: a 99.9 % interval is not a "100% CI".
    table = Table(title=f"{name} % per sample ({100 * confidence:g}% CI; flag at "
                  f"{100 * diagnostic_threshold:g}%)", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["sample", "cells", name, "counted (CI)"]
    if report.adjusted:
        columns.append("adjusted (CI)")
    for col in (*columns, "call"):
        table.add_column(col, justify="left" if col in ("sample", "call") else "right")
    for r in report.sample_results:
        cells = [r.sample, str(r.n_cells), str(r.n_blasts),
                 _percent_with_interval(r.blast_fraction, r.ci_low, r.ci_high)]
        if report.adjusted:
            cells.append(_percent_with_interval(r.adjusted_fraction, r.adjusted_ci_low,
                                                r.adjusted_ci_high))
        table.add_row(*cells, r.call)
    console.print(table)
    for r in report.sample_results:
        if r.adjusted_note:
            console.print(f"{r.sample}: adjusted count undefined: {r.adjusted_note}")
    outside = [r.sample for r in report.sample_results if r.domain == "outside"]
    if outside:
        verdict = ("called anyway (--lab-calibrated)" if lab_calibrated
                   else "no call (withheld)")
        console.print(f"[yellow]{len(outside)} sample(s) {OUTSIDE_NOTE}; {verdict}: "
                      f"{', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''}[/yellow]")
    if any(r.domain == "unchecked" for r in report.sample_results):
        console.print("domain check: none (the model was made by an earlier version of leukolearn); "
                      "samples from another lab are not recognised")
    if report.skipped:
        console.print(f"[yellow]{len(report.skipped)} unreadable images skipped[/yellow]")
    console.print(f"{len(report.paths)} cells -> {out}")


def _percent_with_interval(value: float, low: float, high: float) -> str:
    # Whole-percent bounds: an interval's own precision, and the cell stays narrow. Rounded
    # outwards, so the printed interval holds the computed one: (0, 0.004) is "0-1", never
    # the "0-0" of a certainty it does not have.
    import math

    if math.isnan(value):
        return "undefined"
    return f"{100 * value:.1f} ({math.floor(100 * low + 1e-6):.0f}-" \
           f"{math.ceil(100 * high - 1e-6):.0f})"


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="A model.safetensors (or the folder `train` wrote)."),
    dataset: str = DatasetArg,
    root: Path = RootArg,
    target_sensitivity: float = typer.Option(..., "--target-sensitivity", help="e.g. 0.95"),
    out: Path = typer.Option(..., "--out", help="The calibrated copy of the model (.safetensors)."),
    part: str = typer.Option("val", "--part", help="Images to calibrate on: 'val' or 'test' of the "
                             "model's split (the split.json beside it, or the run store of a "
                             "sweep's RUN/weights/<job>.safetensors), or 'all' (a held-out "
                             "labelled set)."),
    positive: Optional[str] = PositiveOpt,
    size: Optional[int] = SizeOpt,
    label_table: Optional[Path] = LabelTableOpt,
    masks: Optional[Path] = MasksOpt,
    keep_duplicates: bool = NoDedupeOpt,
    allow_outside_root: bool = AllowOutsideRootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the threshold and the "
                                 "calibration as JSON."),
):
    """Choose a blast threshold for a target sensitivity on held-out labelled images.

    Writes a copy of the model whose config stores the threshold and its calibration
    (reliability curve, ECE); `predict` then uses that threshold.
    """
    from leukolearn.errors import LeukolearnError
    from leukolearn.model.weights import save_models
    from leukolearn.predict.predictor import MODEL_FILE, load_predictor
    from leukolearn.predict.threshold import (calibrate_models, calibration_classes,
                                              calibration_rows)

    checks.probability(target_sensitivity, "--target-sensitivity", zero=False)
    checks.one_of(part, ("val", "test", "all"), "--part")
    if out.is_dir():
        out = out / MODEL_FILE
    checks.out_file(out, "--out")
    predictor = load_predictor(model)
    if predictor.kind != "model":
        raise LeukolearnError(f"{model} is a RUN; `predict --target-sensitivity` calibrates a "
                              "RUN on its own test-fold predictions")
    network = predictor.models[0]
    multiclass, counted = calibration_classes(network.config.class_names, dataset,
                                              split_csv(positive))
    cells = load_cells(dataset, root, size=size or network.config.input_size,
                       positive=None if multiclass else positive, multiclass=multiclass,
                       label_table=label_table, masks=masks, keep_duplicates=keep_duplicates,
                       allow_outside_root=allow_outside_root)
    idx, source = calibration_rows(cells, network.config.class_names, predictor.source, part,
                                   root)
    calibrated = calibrate_models(predictor.models, cells.images[idx], cells.labels[idx],
                                  target_sensitivity, positive=counted, source=source)
    save_models(calibrated, out)
    info = calibrated[0].config.extra["calibration"]
    c = info["threshold"]
    if as_json:
        typer.echo(to_json({"model": str(out), "source": source, **info}))
        return
    Console().print(
        f"threshold {c['threshold']:.4f}: sensitivity {c['sensitivity']:.3f}, specificity "
        f"{c['specificity'] if c['specificity'] is None else round(c['specificity'], 3)} on "
        f"{source} ({c['n_positive']} {'+'.join(info['positive'])} cells); "
        f"ECE {info['reliability']['ece']:.3f}\n"
        f"calibrated model -> {out}")


@app.command()
def plan(
    run: Path = typer.Argument(..., help="A RUN directory written by `sweep`."),
    target: float = typer.Option(..., "--target-auc", "--target", help="Test metric to reach "
                                 "(AUC, or weighted F1 for a multiclass run)."),
    fit_max: Optional[int] = typer.Option(None, "--fit-max", help="Fit on training sizes up to this."),
    validate_at: Optional[int] = typer.Option(None, "--validate-at", help="Compare the prediction "
                                              "with the measured mean at this size."),
    n_boot: int = typer.Option(curves.N_BOOT, "--n-boot", help="Bootstrap resamples of the folds."),
    seed: int = typer.Option(0, "--seed", help="Seeds the bootstrap."),
    confidence: float = typer.Option(curves.CONFIDENCE, "--confidence"),
    figure_dir: Optional[Path] = typer.Option(None, "--figure-dir", help="Where learning_curve_plan"
                                              ".png/.svg go (default: RUN/figures)."),
    without_dead: bool = typer.Option(False, "--without-dead", help="Leave out dead networks "
                                      "(constant predictions): they failed to train, which "
                                      "--restarts mends, whatever the number of images."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
):
    """How many annotated training images reach a target AUC, with a CI.

    Fits an inverse power law a - b*n^-c to the sweep's test metric per training size and
    bootstraps over folds; draws the fit with the measured points and the target.
    """
    from leukolearn.report.analysis_figures import learning_curve_figure
    from leukolearn.analysis.curves import plan_from_store
    from leukolearn.report.style import save_figure

    checks.at_least(n_boot, 1, "--n-boot")
    checks.at_least(fit_max, 1, "--fit-max")
    checks.probability(target, "--target-auc", zero=False)
    checks.probability(confidence, "--confidence", zero=False, one=False)
    checks.not_negative(seed, "--seed")
    figures = checks.out_dir(figure_dir or run / "figures", "--figure-dir",
                             default=figure_dir is None)
    result = plan_from_store(run, target, fit_max=fit_max, validate_at=validate_at,
                             n_boot=n_boot, seed=seed, confidence=confidence,
                             without_dead=without_dead)
    written = save_figure(learning_curve_figure(result), figures, "learning_curve_plan")
    if as_json:
        typer.echo(to_json({**result.to_dict(), "figure": str(written[0])}))
    else:
        typer.echo(result.text())
        typer.echo(f"figure -> {written[0]}")


@app.command()
def export(
    model: Path = typer.Argument(..., help="A model.safetensors (or the folder `train` wrote)."),
    onnx: Path = typer.Option(..., "--onnx", help="The .onnx file to write."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset version."),
    as_json: bool = typer.Option(False, "--json", help="Print the file's input, classes and "
                                 "the ONNX Runtime check as JSON."),
):
    """Write a model with its softmax as ONNX, class names in its metadata.

    Input float32 (N, 3, H, W) RGB in [0, 1]; output class probabilities.
    """
    from leukolearn.errors import LeukolearnError
    from leukolearn.model.onnx import PARITY_TOLERANCE, check_opset, export_onnx, onnx_difference
    from leukolearn.predict.predictor import load_predictor

    check_opset(opset)
    checks.out_file(onnx, "--onnx")
    predictor = load_predictor(model)
    if predictor.kind != "model":
        raise LeukolearnError(f"{model} is a RUN; export one of its weights/<job>.safetensors")
    if len(predictor.models) > 1:
        raise LeukolearnError(f"{predictor.source}: an ensemble of {len(predictor.models)} "
                              "networks; ONNX export takes one network")
    export_onnx(predictor.models[0], onnx, opset=opset)
    c = predictor.config
    if not as_json:
        typer.echo(f"{onnx}: input image float32 (N, 3, {c.input_size}, {c.input_size}) in "
                   f"[0, 1], output probabilities over {', '.join(c.class_names)}")
    difference = onnx_difference(predictor.models[0], onnx)
    if difference > PARITY_TOLERANCE:
        onnx.unlink(missing_ok=True)
        raise LeukolearnError(f"ONNX Runtime's probabilities differ from PyTorch's by "
                              f"{difference:.1e} (more than {PARITY_TOLERANCE:.0e}); "
                              f"{onnx} was not kept; try another --opset")
    if as_json:
        typer.echo(to_json({"onnx": str(onnx), "opset": opset,
                            "input": [None, 3, c.input_size, c.input_size],
                            "class_names": list(c.class_names),
                            "max_difference": difference}))
        return
    typer.echo(f"checked: ONNX Runtime matches PyTorch within {difference:.1e} on 8 random images")
