"""The package's shape (docs/architecture.md): layers one way, no import cycle, short modules."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "leukolearn"
MAX_LINES = 400
# Declarative tables, not logic: allowed to be longer.
LONG_ALLOWED: set[str] = set()


def _import_graph():
    grimp = pytest.importorskip("grimp")  # installed with import-linter (the test extra)
    return grimp.build_graph("leukolearn")


def test_no_import_cycle_between_modules():
    # Every import counts, also those inside functions: a lazy import still ties two modules.
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    graph = _import_graph()
    modules = sorted(graph.modules)
    index = {m: i for i, m in enumerate(modules)}
    edges = [(index[a], index[b]) for a in modules
             for b in graph.find_modules_directly_imported_by(a)
             if b in index and not a.startswith(b + ".")]  # a package's __init__ is its parent
    rows, cols = zip(*edges)
    matrix = csr_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(modules), len(modules)))
    _, component = connected_components(matrix, directed=True, connection="strong")
    cycles = [[m for m, c in zip(modules, component) if c == k]
              for k in set(component) if (component == k).sum() > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_layers_contract_holds():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([lint], capture_output=True, text=True,
                            cwd=PACKAGE.parents[1])
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES
            and str(p.relative_to(PACKAGE)) not in LONG_ALLOWED}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_subpackage_says_what_it_holds():
    for init in PACKAGE.glob("*/__init__.py"):
        text = init.read_text().strip()
        assert text.startswith('"""') and len(text) > 80, f"{init} has no docstring"
