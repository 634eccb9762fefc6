"""The package imports where POSIX-only modules are missing, as on Windows.

Linux and macOS have fcntl, resource, termios, grp and pwd; Windows has none of them. A
module that imports one at its top (the run lock once used fcntl.flock) would make the
whole package unusable there, which no test on Linux would notice. So a subprocess
blocks them (`sys.modules[name] = None` makes `import name` raise ImportError), then
imports every module of the package and builds the CLI.
"""
import subprocess
import sys
import textwrap

import pytest

WINDOWS_LACKS = ("fcntl", "resource", "termios", "grp", "pwd")

_SCRIPT = textwrap.dedent("""
    import sys
    for name in {blocked!r}:
        sys.modules[name] = None
    import importlib, pkgutil
    import leukolearn, leukolearn.cli

    def refuse(name):  # walk_packages skips a subpackage that fails to import, unless told
        raise  # the ImportError it is handling, with its cause

    names = [m.name for m in pkgutil.walk_packages(leukolearn.__path__, "leukolearn.",
                                                    onerror=refuse)
             if m.name != "leukolearn.__main__"]  # that one runs the CLI
    for name in names:
        importlib.import_module(name)
    try:
        leukolearn.cli.main(["--help"])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    print("imported", len(names))
""")


@pytest.mark.slow
def test_every_module_imports_without_posix_only_modules(tmp_path):
    run = subprocess.run([sys.executable, "-c", _SCRIPT.format(blocked=WINDOWS_LACKS)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    imported = int(run.stdout.split("imported")[-1])
    assert imported > 50  # the walk found the subpackages' modules, not just the top
