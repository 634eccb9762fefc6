"""leukolearn: how many annotated images does a blast detector need?

A reproduction and extension of Schouten et al., "Tens of images can suffice to
train neural networks for malignant leukocyte detection", Sci Rep 11, 7995 (2021).

The Python API is the few names below; everything else is reachable through the
subpackages (docs/architecture.md), but only these are kept stable::

    import leukolearn as ll

    cells = ll.load_dataset("folder", "cells/", positive=["blast"])   # a CellImages
    config = ll.get_preset("quick")                                   # a SweepConfig
    plan = ll.make_plan(config.protocol, cells.labels, config.options)
    print(len(plan), "trainings")
    ll.sweep(cells, config, "run/", jobs=2)                           # resumable
    with ll.open_run("run/") as run:
        print(ll.summarize(run).to_csv())
        grid, notes = ll.explain_grid(run, ll.reload_cells(run), fold=0, sizes=[10, 50],
                                      rows=[0, 1])
    report = ll.predict_samples("run/", ["patients/"], ll.PredictOptions())
    report.write("predictions/")

The names that would clash with a subpackage (`explain`, `predict`) keep their long
form. Names are imported on first use, so `import leukolearn` stays fast (the CLI starts in
well under a second) and a name pulls in only its own stage.
"""
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leukolearn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# public name -> (module, attribute)
_API = {
    "CellImages": ("leukolearn.data.cellimages", "CellImages"),
    "load_dataset": ("leukolearn.data.dataset", "load_dataset"),
    "inspect_dataset": ("leukolearn.data.dataset", "inspect_dataset"),
    "TrainConfig": ("leukolearn.training.config", "TrainConfig"),
    "train_model": ("leukolearn.training.loop", "train_model"),
    "SweepConfig": ("leukolearn.experiments.presets", "SweepConfig"),
    "get_preset": ("leukolearn.experiments.presets", "get_preset"),
    "make_plan": ("leukolearn.experiments.protocol", "make_plan"),
    "sweep": ("leukolearn.experiments.sweep", "sweep_dataset"),
    "RunStore": ("leukolearn.runstore.store", "RunStore"),
    "open_run": ("leukolearn.runstore.store", "RunStore.open"),
    "summarize": ("leukolearn.analysis.summary", "summarize_store"),
    "plan_from_store": ("leukolearn.analysis.curves", "plan_from_store"),
    "reload_cells": ("leukolearn.explain.runs", "reload_cells"),
    "explain_grid": ("leukolearn.explain.measures", "explain_grid"),
    "load_model": ("leukolearn.model.weights", "load_model"),
    "load_models": ("leukolearn.model.weights", "load_models"),
    "PredictOptions": ("leukolearn.predict.predictor", "PredictOptions"),
    "predict_samples": ("leukolearn.predict.predictor", "predict_samples"),
    "LeukolearnError": ("leukolearn.errors", "LeukolearnError"),
}
__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module 'leukolearn' has no attribute {name!r}") from None
    value = import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__
