"""What every command checks before it does any work: its options, and that its outputs
can be written.

A command calls these first, so a mistyped option or an --out that cannot be written costs
nothing: no training or prediction is done and then lost, and nothing is created (no run
directory that a corrected command would then refuse as "different settings"). Each
check raises a LeukolearnError naming the option; `cli.main` prints it as one line.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from leukolearn.errors import LeukolearnError
from leukolearn.experiments.presets import BATCH_MODELS
from leukolearn.files import check_new_file, check_writable_dir

# The initialisations model.cnn.build_model knows (tests/test_outputs.py builds each).
INITS = ("keras", "torch")
# What training.loop.resolve_device accepts: "auto", or a device torch can name.
_DEVICE = re.compile(r"(cpu|auto|mps|cuda(:\d+)?)")


def out_dir(path: Path, option: str = "--out", default: bool = False) -> Path:
    """`path` as a folder a command may create and write into; `default`: the command
    chose it (e.g. RUN/figures), so the message says how to choose another."""
    try:
        return check_writable_dir(path)
    except OSError as exc:
        raise _refused(exc, option, default) from None


def out_file(path: Path, option: str, default: bool = False) -> Path:
    """`path` as a file a command may write (replacing one that is there)."""
    try:
        return check_new_file(path)
    except OSError as exc:
        raise _refused(exc, option, default) from None


def _refused(exc: OSError, option: str, default: bool) -> LeukolearnError:
    where = f"{option} {exc.filename}" if not default else str(exc.filename)
    hint = f" (the default; give {option} to write elsewhere)" if default else ""
    return LeukolearnError(f"{where}: {exc.strerror}{hint}")


def training(*, init: Optional[str] = None, device: Optional[str] = None, **settings) -> None:
    """Training settings as TrainConfig checks them (max_epochs, patience, restarts...),
    and the two it takes as they come: the initialisation and the device, which would
    otherwise fail only inside every job."""
    from leukolearn.training.config import TrainConfig

    TrainConfig(**{k: v for k, v in settings.items() if v is not None})
    if init is not None and init not in INITS:
        raise LeukolearnError(f"--init {init!r}: use {' or '.join(map(repr, INITS))}")
    if device is not None:
        check_device(device)


def check_device(device: str) -> None:
    if not _DEVICE.fullmatch(device):
        raise LeukolearnError(f"--device {device!r}: use cpu, cuda, cuda:N or auto")
    if device.startswith("cuda"):  # torch only here: the other commands start without it
        import torch

        if not torch.cuda.is_available():
            raise LeukolearnError(f"--device {device} asked for, but torch sees no CUDA GPU")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise LeukolearnError(f"--device {device}: torch sees {torch.cuda.device_count()} "
                                  "CUDA GPU(s), numbered from 0")


def at_least(value: Optional[int], minimum: int, option: str) -> None:
    if value is not None and value < minimum:
        raise LeukolearnError(f"{option} must be at least {minimum}, got {value}")


def not_negative(value: Optional[int], option: str) -> None:
    if value is not None and value < 0:
        raise LeukolearnError(f"{option} must be 0 or more, got {value}")


def probability(value: Optional[float], option: str, *, zero: bool = True,
                one: bool = True) -> None:
    """`value` in [0, 1] (`zero` / `one` False: that end excluded), by the rule and in the
    words `predict.counts.check_fraction` has for predict's fractions (95 is refused with
    "give 0.95")."""
    from leukolearn.predict.counts import check_fraction

    if value is not None:
        check_fraction(option, value, zero=zero, one=one)


def one_of(value: str, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise LeukolearnError(f"{option} {value!r}: choose {', '.join(choices)}")


def workers(jobs: int, batch_models: int = BATCH_MODELS, executor: str = "local",
            ray_address: str | None = None) -> None:
    """--jobs, --batch-models, --executor and --ray-address, as run_sweep checks them, but
    before the data are read and the run directory is made."""
    from leukolearn.experiments.sweep import check_workers

    check_workers(jobs, batch_models, executor, ray_address)


def run_out(path: Path) -> Path:
    """A sweep's --out: a new folder, or a run to resume (which the store checks further
    once the data are loaded); refused at once: a file, an unwritable place, a folder of
    the user's that is not a run."""
    if path.exists() and not path.is_dir():  # as RunStore.create_or_resume says it
        raise LeukolearnError(f"{path} is a file, not a run directory; choose another --out")
    out_dir(path)
    if path.is_dir() and not (path / "config.json").exists():
        from leukolearn.runstore.resume import refuse_foreign

        refuse_foreign(path)
    return path
