"""The shortcut control: the same sweep on the original images, on the cell alone and on
the background alone. If the background alone predicts the class about as well as the
whole image, a network can score well without looking at the cell (ALL-IDB2's blast and
healthy photos differ in background colour).

A variant is a CellImages -> CellImages transform applied after loading; each variant is
an ordinary resumable run directory (OUT/original, OUT/cell-only, OUT/background-only)
whose dataset.json records the variant (mask source, fill colour, margin), so that
`reload_cells` can rebuild its pixels and a resume with other masks is refused.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from leukolearn.analysis.ensemble import scored_run
from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.files import write_csv, write_json, write_text
from leukolearn.experiments.presets import JOBS
from leukolearn.experiments.variants import (MARGIN, VARIANTS, ShortcutMasks, apply_variant,
                                             cover_radius, median_background)


@dataclass
class ShortcutRun:
    out: Path
    masks: ShortcutMasks
    reports: dict[str, Any]  # variant -> SweepReport
    fill: list[int]  # RGB painted over the removed part
    radius: int  # px of the disc background-only paints around each cell's centre
    reused: int = 0  # jobs of the original variant copied from an earlier sweep


def run_shortcut(cells: CellImages, config: Any, out: str | Path, *, masks: ShortcutMasks,
                 dataset_name: str = "", dataset_root: str | Path = "",
                 load_options: Mapping[str, Any] | None = None, jobs: int = JOBS,
                 progress: bool = True, runner=None,
                 original: str | Path | None = None) -> ShortcutRun:
    """Sweep `config` on the three variants into OUT/<variant> (each resumable).

    `original`: a run of `leukolearn sweep` on the same images with the same settings
    (sizes and folds may differ); the jobs it holds are copied, not trained again.
    Name, root and load options default, as for `sweep_dataset`, to where `load_dataset`
    read `cells` from: the variants' images carry no source of their own."""
    from leukolearn.experiments.sweep import sweep_dataset

    if cells.source is not None:
        dataset_name = dataset_name or cells.source.name
        dataset_root = dataset_root or cells.source.root
        load_options = cells.source.load_options if load_options is None else load_options
    out = Path(out)
    if out.exists() and (out / "config.json").exists():
        raise LeukolearnError(f"{out} is a run directory; the shortcut control needs a folder "
                              "of its own (it makes three runs inside)")
    fill = [int(v) for v in median_background(cells.images, masks.masks)]
    radius = cover_radius(masks.masks)
    reports, reused = {}, 0
    for name in VARIANTS:
        variant: dict[str, Any] = {"name": name}
        if name != "original":
            variant |= {"masks": masks.kind, "masks_dir": masks.masks_dir, "fill": fill,
                        "margin": MARGIN}
        if name == "background-only":
            variant["radius"] = radius
        _check_variant(out / name, variant)
        recorded = {**(load_options or {}), "variant": variant}
        if name == "original" and original is not None:
            reused = copy_original_jobs(original, cells, config, out / name,
                                        dataset_name=dataset_name, dataset_root=dataset_root,
                                        load_options=recorded)
        reports[name] = sweep_dataset(
            apply_variant(cells, name, masks.masks, fill, radius=radius), config, out / name,
            dataset_name=dataset_name, dataset_root=dataset_root, load_options=recorded,
            jobs=jobs, progress=progress, runner=runner)
        if reports[name].interrupted:
            break
    return ShortcutRun(out, masks, reports, fill, radius, reused)


# Job ids, splits and seeds do not depend on the sizes swept or the folds run (see
# leukolearn.experiments.protocol), so a sweep with other sizes or folds still holds this control's jobs.
_JOB_NEUTRAL = ("options.sizes", "options.run_folds", "options.ensemble")


def copy_original_jobs(source: str | Path, cells: CellImages, config: Any, out: str | Path, *,
                       dataset_name: str = "", dataset_root: str | Path = "",
                       load_options: Mapping[str, Any] | None = None) -> int:
    """Copy into the run `out` the jobs of `config`'s plan on `cells` that the sweep
    `source` finished with the same split and seed; returns how many were copied.

    Refuses a `source` swept with other settings (but sizes and folds run) or on other
    images. `out` is opened exactly as `sweep_dataset` opens it, which then resumes."""
    import warnings

    from leukolearn.experiments.protocol import keep_classes, make_plan
    from leukolearn.runstore.store import DatasetInfo, RunStore
    from leukolearn.runstore.resume import (config_differences, describe_dataset, describe_differences)

    kept, dropped = keep_classes(cells, config.options.min_per_class)
    info = DatasetInfo.from_cells(kept, dataset_name, dataset_root, load_options=load_options,
                                  dropped_classes=dropped)
    with RunStore.open(source) as old:
        diffs = config_differences(old.config_dict, config.to_dict(), also_neutral=_JOB_NEUTRAL,
                                   config_type=type(config))
        if diffs:
            raise LeukolearnError(f"--original {source} was swept with other settings "
                                  f"({describe_differences(diffs)}); its jobs are not this "
                                  "control's: give the options of that sweep, or leave it out")
        if old.dataset_info.fingerprint != info.fingerprint:
            raise LeukolearnError(f"--original {source} was swept on other images "
                                  f"({describe_dataset(old.dataset_info)}) than these "
                                  f"({describe_dataset(info)})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sweep_dataset makes the same plan and warns
            plan = make_plan(config.protocol, kept.labels, config.options)
        seeds = {r.job_id: r.seed for r in old.results()}
        wanted = [job for job in plan if job.job_id in seeds]
        if not wanted:
            return 0
        with RunStore.create_or_resume(out, config=config, dataset=info, cells=kept) as new:
            done = new.finished_ids()
            todo = [job for job in wanted if job.job_id not in done
                    and _reusable(old, job, seeds[job.job_id])]
            for job in todo:
                new.copy_job_from(old, job.job_id)
    return len(todo)


def _reusable(store: Any, job: Any, seed: int) -> bool:
    """The stored job trained, stopped and tested on the images of `job`, from its seed, and
    its weights file (if it kept one) is still there (else the job is trained again)."""
    split = store.split(job.job_id)
    weights = store.weights_path(job.job_id)
    return (seed == job.seed and (weights is None or weights.is_file())
            and all(np.array_equal(a, b) for a, b in
                    zip(split, (job.train_idx, job.val_idx, job.test_idx))))


def shortcut_summary(out: str | Path, masks: ShortcutMasks | None = None) -> dict:
    """The metric per training size of each variant run found in `out` (median, IQR, mean,
    s.d. over folds) as a JSON-ready dict."""
    from leukolearn.runstore.store import RunStore

    out = Path(out)
    result: dict[str, Any] = {"variants": {}}
    for name in VARIANTS:
        if not (out / name / "config.json").exists():
            continue
        with RunStore.open(out / name) as store:
            records = scored_run(store).results()  # an ensemble run: its ensembles
            result["metric"] = store.config_dict["metric"]
            variant = store.dataset_info.load_options.get("variant", {})
        sizes = sorted({r.size for r in records})
        rows = []
        for s in sizes:
            v = np.array([r.metric for r in records if r.size == s], dtype=float)
            v = v[np.isfinite(v)]
            q = np.percentile(v, [25, 50, 75]) if len(v) else [math.nan] * 3
            rows.append({"size": s, "n": int(len(v)), "median": float(q[1]),
                         "q1": float(q[0]), "q3": float(q[2]),
                         "mean": float(v.mean()) if len(v) else math.nan,
                         "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                         "values": [float(x) for x in v]})
        result["variants"][name] = {"rows": rows, "fill": variant.get("fill"),
                                    "masks": variant.get("masks")}
    if masks is not None:
        result["masks"] = masks.description
        result["masks_short"] = masks.short
        if masks.dice:
            result["segmentation_dice"] = masks.dice
    return result


def summary_table(summary: Mapping[str, Any]) -> list[dict]:
    """One row per size: the median metric of each variant (NaN where it has no job)."""
    sizes = sorted({r["size"] for v in summary["variants"].values() for r in v["rows"]})
    table = []
    for s in sizes:
        row: dict[str, Any] = {"size": s}
        for name, v in summary["variants"].items():
            hit = next((r for r in v["rows"] if r["size"] == s), None)
            row[f"{name}_median"] = hit["median"] if hit else math.nan
            row[f"{name}_n"] = hit["n"] if hit else 0
        table.append(row)
    return table


def write_summary(out: str | Path, summary: Mapping[str, Any]) -> list[Path]:
    """OUT/shortcut.json and OUT/shortcut.csv (medians per size, side by side; NaN, a
    variant without a job at that size, as an empty cell; empty without any job)."""
    out = Path(out)
    json_path, csv_path = out / "shortcut.json", out / "shortcut.csv"
    write_json(json_path, summary)
    table = summary_table(summary)
    if table:
        header = list(table[0])
        write_csv(csv_path, header, [[round(v, 4) if isinstance(v, float) else v
                                      for v in (row[k] for k in header)] for row in table])
    else:
        write_text(csv_path, "")
    return [json_path, csv_path]


def _check_variant(path: Path, variant: Mapping[str, Any]) -> None:
    """Refuse to resume a variant run made with other masks / fill (clearer than the
    fingerprint message the store would give)."""
    info = path / "dataset.json"
    if not info.is_file():
        return
    stored = json.loads(info.read_text()).get("load_options", {}).get("variant")
    if stored is not None and stored != json.loads(json.dumps(variant)):
        diff = "; ".join(f"{k}: {stored.get(k)!r} -> {variant.get(k)!r}"
                         for k in sorted(set(stored) | set(variant))
                         if stored.get(k) != variant.get(k))
        raise LeukolearnError(f"{path} was made with other shortcut settings ({diff}); "
                              "use the same --masks, or a new --out")

