"""Whether a run directory may be resumed: the same settings, the same dataset, a folder
that is a run (or empty).

A setting that changes what a job computes must match the stored config.json; the
settings in `RESULT_NEUTRAL` may differ. A config stored by an older version is first
read back through its own config class (`config_type.from_dict`), so settings added
since take their defaults, which reproduce the old behaviour: an upgrade still resumes.

How a job ran (the device, the fused kernels, torch's threads) is not a setting and may
change on resume, but it changes the float sums of new jobs: `ran_otherwise` says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from leukolearn.errors import LeukolearnError
from leukolearn.runstore.schema import DatasetInfo


class ConfigType(Protocol):
    """A config class that reads its own stored dict (e.g. `experiments.presets.SweepConfig`)."""

    @classmethod
    def from_dict(cls, data: dict) -> Any: ...


# Where `leukolearn evaluate RUN` keeps its external validations (one folder each), and
# the report finds them.
EVALUATIONS_DIR = "evaluations"
# What a run directory may hold; anything else means the folder is not (only) a run.
OWN_FILES = {"config.json", "dataset.json", "versions.json", "run.sqlite", "run.sqlite-journal",
             "weights", ".lock", "summary.csv", EVALUATIONS_DIR}
# Left by a process killed while writing one of the JSON files, by older versions
# (files.atomic_write's fixed temporary names; before 0.2 and then until unique names).
OWN_FILES |= {f".{name}.tmp.json" for name in ("config", "dataset", "versions")}
OWN_FILES |= {f".{name}.json.tmp" for name in ("config", "dataset", "versions")}
# The files a run writes into its folder with files.atomic_write, whose temporary names
# are now `.{name}.{pid}-{random}.tmp` (files.temporary_name): matched by prefix and suffix.
_WRITTEN = ("config.json", "dataset.json", "versions.json", "summary.csv")


def is_own_file(name: str) -> bool:
    """Whether a run directory may hold a file or folder of this name."""
    return name in OWN_FILES or (name.endswith(".tmp") and any(
        name.startswith(f".{written}.") for written in _WRITTEN))


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in a run directory
    and its weights/ (a unique name per write, so no later write replaces them). Only
    called by the lock's holder: no other writer can be filling one. Returns them."""
    stale = [p for folder in (path, path / "weights") if folder.is_dir()
             for p in folder.iterdir() if p.is_file() and p.name.startswith(".")
             # ours (files.temporary_name, and older fixed names), and safetensors' own
             # `.tmpXXXXXX`, which it writes before renaming into our temporary file
             and (p.name.endswith(".tmp") or ".tmp." in p.name or p.name.startswith(".tmp"))]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_same_run(path: Path, config: dict, dataset: DatasetInfo,
                   config_type: ConfigType | None = None) -> None:
    """Refuse to resume `path` with another config or another dataset."""
    diffs = config_differences(json.loads((path / "config.json").read_text()), config,
                               config_type=config_type)
    if diffs:
        raise LeukolearnError(
            f"{path} holds a run with different settings ({describe_differences(diffs)}); "
            "re-run with the original options to resume, or choose a new --out"
        )
    old = DatasetInfo.from_dict(json.loads((path / "dataset.json").read_text()))
    if old.fingerprint != dataset.fingerprint:
        raise LeukolearnError(
            f"{path} holds a run on another dataset ({describe_dataset(old)}) than this one "
            f"({describe_dataset(dataset)}); choose a new --out"
        )


def config_differences(stored: Mapping[str, Any], config: Mapping[str, Any],
                       also_neutral: tuple[str, ...] = (),
                       config_type: ConfigType | None = None) -> list[tuple[str, Any, Any]]:
    """(setting, stored value, new value) for each setting in which `config` computes other
    results than a run's stored config; `also_neutral` names more settings to ignore (e.g.
    "options.sizes" when only jobs present in both are compared)."""
    neutral = RESULT_NEUTRAL | set(also_neutral)
    return [d for d in diff_configs(_upgrade(dict(stored), config_type), normalise(config)) if d[0] not in neutral]


def describe_differences(diffs: list[tuple[str, Any, Any]]) -> str:
    shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:5])
    return shown + (f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else "")


def describe_dataset(info: DatasetInfo) -> str:
    return f"{info.name or '?'}: {info.n_images} images, fingerprint {info.fingerprint[:12]}"


# Settings free to differ on resume: the device (how fast a job runs; what it changes in
# the float sums is recorded per job and `ran_otherwise` warns of it), "threads" (a setting
# until every CPU training used a fixed count, kept here so the configs stored then still
# compare), and how many of the folds are run (fold f's jobs do not depend on it, see
# leukolearn.experiments.protocol), so a run of 3 folds can be extended to all 10.
# options.ensemble changes how the replicates are scored, not what any job computes: a run
# of replicates may be resumed with or without it (config.json then records the latest).
RESULT_NEUTRAL = {"train.threads", "train.device", "options.run_folds", "options.ensemble"}


@dataclass(frozen=True)
class HowItRan:
    """How a training ran, as run.sqlite records it per job (jobs.kernels, threads, device);
    None: not recorded, or (threads off the CPU) of no consequence."""

    kernels: bool | None
    threads: int | None
    device: str | None


def ran_otherwise(records: Iterable[Any], now: HowItRan) -> str | None:
    """One sentence naming how the finished jobs `records` (`store.JobRecord`s) ran otherwise
    than the new ones will (`now`), or None when none did. A job that did not record it
    (a version before run.sqlite schema 3) counts as the same: nothing is known."""
    records = list(records)
    stored: dict[str, set] = {"device": set(), "kernels": set(), "threads": set()}
    differing = 0
    for r in records:
        parts = _differences(HowItRan(r.kernels, r.threads, r.device), now)
        for name, value in parts:
            stored[name].add(value)
        differing += bool(parts)
    if not differing:
        return None
    names = [name for name in stored if stored[name]]
    then = ", ".join(_describe(name, sorted(stored[name])) for name in names)
    here = ", ".join(_describe(name, [getattr(now, name)]) for name in names)
    return (f"{differing} of the {len(records)} finished jobs ran with {then}; this process "
            f"trains with {here}: new jobs will differ from those in the last float digits "
            "(the same steps, summed in another order, which training can grow into another "
            "metric)")


def _differences(then: HowItRan, now: HowItRan) -> list[tuple[str, Any]]:
    out = []
    for name in ("device", "kernels"):
        a, b = getattr(then, name), getattr(now, name)
        if a is not None and b is not None and a != b:
            out.append((name, a))
    # Threads change the sums of a CPU training only.
    if then.device == now.device == "cpu" and None not in (then.threads, now.threads) \
            and then.threads != now.threads:
        out.append(("threads", then.threads))
    return out


def _describe(name: str, values: list) -> str:
    if name == "device":
        return "device " + " / ".join(map(str, values))
    if name == "kernels":
        return "fused kernels " + " / ".join("on" if v else "off" for v in values)
    return "torch threads " + " / ".join(map(str, values))


def _upgrade(stored: dict, config_type: ConfigType | None) -> dict:
    """A stored config as this version writes it: settings added since it was stored take
    their defaults (which reproduce the old behaviour), so an upgrade can still resume."""
    if config_type is None:
        return stored
    try:
        return normalise(config_type.from_dict(stored).to_dict())
    except (TypeError, KeyError, ValueError):
        return stored  # unreadable as a SweepConfig: compare as stored, the diff will say why


def refuse_foreign(path: Path) -> None:
    """Refuse a non-empty folder that holds files a run does not write."""
    foreign = sorted(p.name for p in path.iterdir() if not is_own_file(p.name))
    if foreign:
        raise LeukolearnError(
            f"{path} is not empty and is not a leukolearn run (it holds {foreign[0]!r}); "
            "choose a new --out"
        )


def diff_configs(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += diff_configs(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def normalise(d: Mapping[str, Any]) -> dict:
    # Through JSON once, so tuples become lists and a fresh config compares equal to a stored one.
    return json.loads(json.dumps(d))
