"""Helpers shared by several test modules (tests/ is on sys.path under pytest)."""
from leukolearn.cli import main


def run_cli(args, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])  # Paths welcome
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def fill_fake_run(path, runner, *, n, options, n_classes=2, metric="auc", class_names=None):
    """A run directory filled by `runner` (a fake: no training) over `n` blank 4 px images
    with labels 0, 1, ..., n_classes - 1 repeating; returns the path."""
    import numpy as np

    from leukolearn.data.cellimages import CellImages
    from leukolearn.experiments.presets import SweepConfig, get_preset
    from leukolearn.experiments.protocol import make_plan
    from leukolearn.runstore.store import DatasetInfo, RunStore
    from leukolearn.experiments.sweep import run_sweep

    names = class_names or (("other", "blast") if n_classes == 2
                            else tuple(f"class{i}" for i in range(n_classes)))
    cells = CellImages(np.zeros((n, 4, 4, 3), np.uint8), np.arange(n) % n_classes, names,
                       tuple(f"img{i}" for i in range(n)))
    config = SweepConfig("all", options, get_preset("quick").train, metric)
    with RunStore.create_or_resume(path, config=config, dataset=DatasetInfo.from_cells(cells),
                                   cells=cells) as store:
        run_sweep(cells, make_plan("all", cells.labels, options), store, runner=runner,
                  progress=False)
    return path
