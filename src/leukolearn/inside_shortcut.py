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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from leukolearn.cellimages import MASK_BACKGROUND, MASK_CYTOPLASM, MASK_NUCLEUS, CellImages
from leukolearn.errors import LeukolearnError

VARIANTS = ("original", "cell-only", "background-only")
MARGIN = 3  # px of background kept around the cell (cell-only) / painted over (background-only)
COVER_QUANTILE = 0.99  # the background-only disc covers this share of the cells whole


@dataclass(frozen=True)
class ShortcutMasks:
    """The masks that cut cell from background, and where they came from."""

    masks: np.ndarray  # (N, H, W) region codes
    kind: str  # "expert" (a masks folder), "segmentation" (focus.segment_cells), "given"
    masks_dir: str | None = None
    dice: dict[str, float] = field(default_factory=dict)  # segmentation vs expert, when both

    @property
    def short(self) -> str:
        return {"expert": "expert masks", "segmentation": "stain segmentation",
                "given": "dataset masks"}[self.kind]

    @property
    def description(self) -> str:
        return {"expert": f"expert masks ({self.masks_dir})",
                "segmentation": "stain segmentation (focus.segment_cells)",
                "given": "the dataset's own masks"}[self.kind]


def shortcut_masks(cells: CellImages, masks_dir: str | Path | None = None,
                   progress: bool = False) -> ShortcutMasks:
    """Expert masks when `cells` carry them (loaded with `masks_dir`, or made with masks),
    else the stain segmentation. With expert masks the segmentation is run too, only to
    report its Dice overlap with them (median over images, whole cell and nucleus)."""
    from leukolearn.focus import dice

    segmented = segment_masks(cells.images, progress)
    if cells.masks is None:
        return ShortcutMasks(segmented, "segmentation")
    kind = "expert" if masks_dir is not None else "given"
    scores = {
        "cell": [dice(s, e, (1, 2)) for s, e in zip(segmented, cells.masks)],
        "nucleus": [dice(s, e, MASK_NUCLEUS) for s, e in zip(segmented, cells.masks)],
    }
    med = {f"{k}_median": float(np.nanmedian(v)) for k, v in scores.items()}
    mean = {f"{k}_mean": float(np.nanmean(v)) for k, v in scores.items()}
    return ShortcutMasks(np.asarray(cells.masks), kind,
                         None if masks_dir is None else str(masks_dir), {**med, **mean})


def apply_variant(cells: CellImages, name: str, masks: np.ndarray, fill, margin: int = MARGIN,
                  radius: int | None = None) -> CellImages:
    """`cells` with the background (cell-only) or the cell (background-only) painted with
    one `fill` colour; masks kept. "original" returns `cells` unchanged.

    background-only paints a disc of one `radius` for every image (centred on the cell)
    together with the cell: painting the cell's own silhouette would leave its size and
    outline visible, and cell size alone tells a blast from a lymphocyte."""
    from leukolearn.focus import background_only, cell_only

    if name == "original":
        return cells
    if name not in VARIANTS:
        raise LeukolearnError(f"unknown shortcut variant {name!r}; choose from {VARIANTS}")
    if name == "cell-only":
        images = cell_only(cells.images, masks, fill=fill, margin=margin)
    else:
        cover = cover_masks(masks, cover_radius(masks) if radius is None else radius)
        images = background_only(cells.images, cover, fill=fill, margin=margin)
    return CellImages(images, cells.labels, cells.class_names, cells.image_ids, masks=masks,
                      groups=cells.groups)


def cover_radius(masks: np.ndarray, quantile: float = COVER_QUANTILE) -> int:
    """The radius (px) of a disc around each cell's centre that holds the whole cell for
    `quantile` of the images (the rest are painted disc + their own outline)."""
    return int(np.ceil(np.quantile([_extent(m)[1] for m in masks], quantile))) if len(masks) else 0


def cover_masks(masks: np.ndarray, radius: int) -> np.ndarray:
    """Masks whose cell is the cell plus a disc of `radius` around its centre (the image
    centre when no cell was found)."""
    out = np.array(masks, copy=True)
    h, w = out.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    for m in out:
        (cy, cx), _ = _extent(m)
        m[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & (m == MASK_BACKGROUND)] = \
            MASK_CYTOPLASM
    return out


def _extent(mask: np.ndarray) -> tuple[tuple[float, float], float]:
    """Centre of the cell pixels of one mask and their largest distance from it."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return (mask.shape[0] / 2, mask.shape[1] / 2), 0.0
    cy, cx = ys.mean(), xs.mean()
    return (cy, cx), float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max()))


def apply_stored_variant(cells: CellImages, variant: Mapping[str, Any]) -> CellImages:
    """Rebuild a variant's images from the record in its run's dataset.json."""
    name = variant.get("name", "original")
    if name == "original":
        return cells
    if variant.get("masks") == "segmentation":
        masks = segment_masks(cells.images, progress=False)
    elif cells.masks is not None:
        masks = cells.masks
    else:
        raise LeukolearnError(f"the {name} variant was made with {variant.get('masks')} masks, "
                              "which cannot be loaded again here")
    return apply_variant(cells, name, masks, variant["fill"], variant["margin"],
                         variant.get("radius"))


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
                 load_options: Mapping[str, Any] | None = None, jobs: int = 1,
                 progress: bool = True, runner=None,
                 original: str | Path | None = None) -> ShortcutRun:
    """Sweep `config` on the three variants into OUT/<variant> (each resumable).

    `original`: a run of `leukolearn sweep` on the same images with the same settings
    (sizes and folds may differ); the jobs it holds are copied, not trained again."""
    from leukolearn.focus import median_background
    from leukolearn.sweep import sweep_dataset

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
# leukolearn.protocol), so a sweep with other sizes or folds still holds this control's jobs.
_JOB_NEUTRAL = ("options.sizes", "options.run_folds")


def copy_original_jobs(source: str | Path, cells: CellImages, config: Any, out: str | Path, *,
                       dataset_name: str = "", dataset_root: str | Path = "",
                       load_options: Mapping[str, Any] | None = None) -> int:
    """Copy into the run `out` the jobs of `config`'s plan on `cells` that the sweep
    `source` finished with the same split and seed; returns how many were copied.

    Refuses a `source` swept with other settings (but sizes and folds run) or on other
    images. `out` is opened exactly as `sweep_dataset` opens it, which then resumes."""
    import warnings

    from leukolearn.protocol import keep_classes, make_plan
    from leukolearn.store import (DatasetInfo, RunStore, config_differences, describe_dataset,
                                  describe_differences)

    kept, dropped = keep_classes(cells, config.options.min_per_class)
    info = DatasetInfo.from_cells(kept, dataset_name, dataset_root, load_options=load_options,
                                  dropped_classes=dropped)
    with RunStore.open(source) as old:
        diffs = config_differences(old.config_dict, config.to_dict(), also_neutral=_JOB_NEUTRAL)
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
    from leukolearn.store import RunStore

    out = Path(out)
    result: dict[str, Any] = {"variants": {}}
    for name in VARIANTS:
        if not (out / name / "config.json").exists():
            continue
        with RunStore.open(out / name) as store:
            records = store.results()
            result["metric"] = store.config.metric
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
    """OUT/shortcut.json and OUT/shortcut.csv (medians per size, side by side)."""
    import csv

    out = Path(out)
    json_path, csv_path = out / "shortcut.json", out / "shortcut.csv"
    json_path.write_text(json.dumps(_no_nan(summary), indent=2) + "\n")
    table = summary_table(summary)
    with open(csv_path, "w", newline="") as f:
        if table:
            writer = csv.DictWriter(f, fieldnames=list(table[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: ("" if isinstance(v, float) and math.isnan(v)
                                  else round(v, 4) if isinstance(v, float) else v)
                              for k, v in row.items()} for row in table)
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


def segment_masks(images: np.ndarray, progress: bool = False) -> np.ndarray:
    """`focus.segment_cells` with a progress bar."""
    from rich.progress import track

    from leukolearn.focus import segment_cell

    if not len(images):
        return np.zeros(images.shape[:3], dtype=np.uint8)
    return np.stack([segment_cell(im) for im in track(
        images, description="stain segmentation", disable=not progress, transient=True)])


def _no_nan(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    return x
