"""C code compiled on first use: the one way leukolearn builds and loads its C sources.

A `NativeLibrary` is one C file shipped as package data (the fused kernels of
`leukolearn.model.kernels`, the resize of `leukolearn.data.fast_resize`). The first
`load()` compiles it with the first C compiler that builds it, of `$CC` (which may hold
flags, e.g. "ccache gcc"), `cc`, `gcc` and `clang`, trying `-O3 -march=native`, then
`-O3 -mcpu=native` (Apple clang on arm64 refuses -march=native), then plain `-O3`, into
`<folder>/<prefix><hash>.so`, once per source, compiler, flags and CPU (the hash covers all
four), written atomically so that parallel workers may build it at the same time. Later
processes load the cached file. When no compiler builds it, or the library does not load,
one warning per process says which compilers were tried and why, and `load()` returns None
for the caller's fallback; an environment variable set to 0 turns a library off without
the warning. The library is loaded with ctypes, whose foreign calls release the GIL.

This module sits at the bottom of the layers (beside `errors`, `files` and `progress`): it
knows no cache location of its own, the caller passes the folder.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence

from leukolearn.files import atomic_write

# -march=native for GCC and clang on x86 and Linux arm64; -mcpu=native for Apple clang on
# arm64, which refuses -march=native; plain -O3 for anything else.
FLAG_SETS = (("-O3", "-march=native"), ("-O3", "-mcpu=native"), ("-O3",))
COMPILERS = ("cc", "gcc", "clang")  # tried in this order after $CC


class NativeLibrary:
    """One C source of a package, compiled and loaded the first time `load()` is called.

    package, filename: where the source lies (package data); folder: a callable giving the
    cache folder (called at build time, so that a changed environment is seen);
    declare: sets the ctypes signatures on the loaded library and returns it;
    switch: the environment variable that turns the library off when "0";
    warning: the message logged once when it cannot be built, with one %s for the reason;
    common_flags: compiler flags after the optimisation flags (before -o); pronoun: what
    the error calls the library ("no C compiler could build them")."""

    def __init__(self, package: str, filename: str, *, folder: Callable[[], Path],
                 declare: Callable[[ctypes.CDLL], ctypes.CDLL], switch: str, warning: str,
                 log: logging.Logger, common_flags: Sequence[str],
                 flag_sets: Sequence[Sequence[str]] = FLAG_SETS, prefix: str = "leukolearn-",
                 libraries: Sequence[str] = ("-lm",), pronoun: str = "them"):
        self.package, self.filename = package, filename
        self._folder, self._declare = folder, declare
        self.switch, self._warning, self._log = switch, warning, log
        self.common_flags = list(common_flags)
        self.flag_sets = [list(flags) for flags in flag_sets]
        self.prefix, self.libraries, self.pronoun = prefix, list(libraries), pronoun
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._tried = False
        self._problem: str | None = None  # why the library is not loaded, once tried
        self._compiler: str | None = None  # the command that built the loaded library

    def load(self) -> ctypes.CDLL | None:
        """The loaded library, built first if needed; None when it cannot be (see
        `problem`). Tried once per process, whatever the outcome."""
        if self._tried:
            return self._lib
        with self._lock:  # threads that ask at once wait for the one build
            if not self._tried:
                try:
                    self._try()
                finally:
                    self._tried = True
        return self._lib

    def problem(self) -> str | None:
        """Why the library is not available (None when it is); tries to build it first."""
        self.load()
        return self._problem

    def compiler(self) -> str | None:
        """The compiler command that built the loaded library; None when none is loaded."""
        self.load()
        return self._compiler

    def source(self) -> str:
        return importlib.resources.files(self.package).joinpath(self.filename).read_text(
            encoding="utf-8")

    def _try(self) -> None:
        if os.environ.get(self.switch, "1") == "0":
            self._problem = f"turned off by {self.switch}=0"
            return
        try:
            path, self._compiler = self.build()
            self._lib = self._declare(ctypes.CDLL(str(path)))
        except (OSError, RuntimeError, ValueError, AttributeError,
                subprocess.SubprocessError) as exc:
            self._lib, self._compiler, self._problem = None, None, str(exc)
            # Once per process, and loud: the fallback is correct but slower, which is
            # worth knowing before hours of work.
            self._log.warning(self._warning, exc)

    def build(self) -> tuple[Path, str]:
        """The compiled library for this source, compiler, flags and CPU, built if missing,
        and the compiler command that built it. RuntimeError says what each compiler
        tried said."""
        source = self.source()
        folder = self._folder()
        folder.mkdir(parents=True, exist_ok=True)
        problems = []
        for command in candidates():
            name = shlex.join(command)
            if shutil.which(command[0]) is None:
                problems.append(f"{name}: not found")
                continue
            last = ""
            for flags in self.flag_sets:
                tag = hashlib.blake2b("\0".join([source, *command, *flags, *self.common_flags,
                                                 platform.machine(), cpu_flags()]).encode(),
                                      digest_size=10).hexdigest()
                target = folder / f"{self.prefix}{tag}.so"
                if target.exists():
                    return target, name
                with tempfile.TemporaryDirectory(dir=folder) as tmp:
                    c_file = Path(tmp) / self.filename
                    c_file.write_text(source, encoding="utf-8")

                    def compile_to(so_file: Path) -> None:
                        run = subprocess.run([*command, *flags, *self.common_flags, "-o",
                                              str(so_file), str(c_file), *self.libraries],
                                             capture_output=True, text=True, timeout=300)
                        if run.returncode != 0:
                            raise _CompileFailed(run)

                    try:
                        # atomic, with a temporary name of its own: parallel workers may
                        # build it too
                        atomic_write(target, compile_to)
                        return target, name
                    except _CompileFailed as failed:
                        run = failed.args[0]
                    except OSError as exc:
                        last = exc.strerror or str(exc)
                        break  # not runnable: no other flags will help
                    lines = [line for line in run.stderr.splitlines() if "error" in line.lower()]
                    last = (lines or run.stderr.strip().splitlines()
                            or [f"exit {run.returncode}"])[0]
            problems.append(f"{name} failed ({last.strip()})")
        raise RuntimeError(f"no C compiler could build {self.pronoun}: " + "; ".join(problems))


class _CompileFailed(Exception):
    """A compiler ran and refused (args[0]: its CompletedProcess): try the next flags."""


def candidates() -> list[list[str]]:
    """Compiler commands to try, in order: $CC (which may hold flags, e.g. "ccache gcc"),
    then cc, gcc and clang, each once even where cc is gcc."""
    names = [os.environ["CC"]] if os.environ.get("CC", "").strip() else []
    names += COMPILERS
    out, seen = [], set()
    for name in names:
        words = shlex.split(name)
        exe = shutil.which(words[0])
        key = (os.path.realpath(exe) if exe else words[0], *words[1:])
        if key not in seen:
            seen.add(key)
            out.append([exe or words[0], *words[1:]])
    return out


def cpu_flags() -> str:
    """The CPU's feature line (Linux), else the processor's name: part of the build hash,
    since -march=native builds for this CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()
