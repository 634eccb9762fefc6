"""The public Python API: the names in leukolearn.__all__, and the docstring's example run
end to end on synthetic cells."""
import subprocess
import sys
from pathlib import Path

import pytest

import leukolearn as ll


def test_every_public_name_resolves():
    for name in ll.__all__:
        assert getattr(ll, name) is not None, name
    assert ll.open_run == ll.RunStore.open
    assert "sweep" in dir(ll)


def test_no_public_name_is_shadowed_by_a_subpackage():
    # Importing leukolearn.explain sets the attribute `explain` on the package, whatever
    # __getattr__ would have returned.
    import pkgutil

    assert not set(ll.__all__) & {m.name for m in pkgutil.iter_modules(ll.__path__)}


def test_unknown_name_is_an_attribute_error():
    try:
        ll.no_such_thing
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("leukolearn.no_such_thing resolved")


def test_import_pulls_in_no_stage_until_used():
    code = ("import sys, leukolearn; "
            "print(sorted(m for m in sys.modules if m.startswith('leukolearn.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_documented_example_runs(tmp_path):
    from leukolearn.data.synthetic import make_binary, write_image_folder

    write_image_folder(make_binary(12, size=190, seed=5), tmp_path / "cells")
    write_image_folder(make_binary(3, size=190, seed=6), tmp_path / "patients" / "p1")
    cells = ll.load_dataset("folder", tmp_path / "cells", positive=["blast"], progress=False)
    config = ll.get_preset("quick").with_options(folds=3, sizes=(4, 8)).with_train(
        max_epochs=2, patience=1)
    plan = ll.make_plan(config.protocol, cells.labels, config.options)
    assert len(plan) == 4  # 2 folds (the quick preset's run_folds) x 2 sizes
    report = ll.sweep(cells, config, tmp_path / "run", progress=False)
    assert report.complete
    with ll.open_run(tmp_path / "run") as run:
        summary = ll.summarize(run)
        assert [row.size for row in summary.rows] == [4, 8]
        grid, _ = ll.explain_grid(run, ll.reload_cells(run), fold=0, sizes=[4, 8], rows=[0, 1])
        assert grid.saliency.shape[:2] == (2, 2)
        assert set(grid.types) <= {"other", "blast"}
    prediction = ll.predict_samples(tmp_path / "run", [tmp_path / "patients"], ll.PredictOptions(),
                            progress=False)
    written = prediction.write(tmp_path / "predictions")
    assert (tmp_path / "predictions" / "cells.csv") in written
    assert prediction.sample_results[0].n_cells == 6


def _docstring_example() -> str:
    doc = ll.__doc__
    block = doc[doc.index("    import leukolearn as ll"):doc.index("\n\n", doc.index("report.write"))]
    return "\n".join(line[4:] for line in block.splitlines())


def test_the_readme_shows_the_docstring_example():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert _docstring_example() in readme


@pytest.mark.slow
def test_the_docstring_example_runs_as_written(tmp_path, monkeypatch):
    from leukolearn.data.synthetic import make_binary, write_image_folder

    # The quick preset's largest size is 100 training images of 10 folds' pools.
    write_image_folder(make_binary(70, size=190, seed=7), tmp_path / "cells")
    write_image_folder(make_binary(4, size=190, seed=8), tmp_path / "patients" / "p1")
    monkeypatch.chdir(tmp_path)
    exec(compile(_docstring_example(), "leukolearn.__doc__", "exec"), {})
    assert (tmp_path / "predictions" / "samples.csv").is_file()
    with ll.open_run(tmp_path / "run") as run:
        assert len(run.results()) == 6  # 2 folds x sizes 10, 50, 100
