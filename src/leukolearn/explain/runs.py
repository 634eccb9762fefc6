"""Looking inside a run's networks: the glue between a run store and the explanation
modules (`saliency`, `lrp`, `embed`, `focus`).

A run stores indices, not pixels, so every analysis first reloads the run's dataset
exactly as the sweep saw it (`reload_cells`: same loader, options, class filter and
shortcut variant; the decoded-array cache makes it fast) and refuses when the content
fingerprint differs. The per-model measures over a whole run (`explain.measures`) keep
one CSV row per job and reuse rows of jobs already measured, so a second call on a
growing sweep measures only the new jobs.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.data.classes import blast_class, stored_positive
from leukolearn.errors import LeukolearnError
from leukolearn.files import write_csv
from leukolearn.progress import track
from leukolearn.runstore.store import JobRecord, RunStore

# The paper's Fig 4b rows: a lymphoblast, a typical lymphocyte, a segmented neutrophil.
FIG4B_TYPES = ("blast", "lympho", "neutro")


# --------------------------------------------------------------------------- the dataset


def reload_cells(store: RunStore, *, masks_dir: str | Path | None = None,
                 progress: bool = False) -> CellImages:
    """The run's CellImages as its sweep saw them, with expert masks from `masks_dir`.

    Raises LeukolearnError when the run does not say where its images are, when they are
    gone, or when what is there now is not what the run was trained on (fingerprint).
    """
    from leukolearn.data.dataset import load_dataset
    from leukolearn.experiments.variants import apply_stored_variant
    from leukolearn.experiments.presets import SweepConfig
    from leukolearn.experiments.protocol import keep_classes

    info = store.dataset_info
    opts = info.load_options
    if not info.name or not info.root:
        raise LeukolearnError(f"{store.path}/dataset.json does not name the dataset and its "
                              "folder (the run was made from Python without them)")
    root = Path(info.root)
    if not root.exists():
        raise LeukolearnError(f"the images of run {store.path} are gone: {root} does not exist "
                              f"(dataset {info.name}, {info.n_images} images)")
    variant = opts.get("variant") or {}
    variant_masks = variant.get("masks_dir")
    # stored_positive reads the options as `load_dataset` records them (the positive
    # classes joined by commas, multiclass when none) and as earlier CLIs wrote them
    # (--positive as typed, None with multiclass false for the layout's default).
    load = dict(size=opts.get("size"), positive=stored_positive(info.name, opts),
                label_table=opts.get("label_table"), dedupe=opts.get("dedupe", True),
                allow_outside_root=opts.get("allow_outside_root", False), progress=progress)
    cells = load_dataset(info.name, root, masks_dir=variant_masks or masks_dir, **load)
    if variant:
        cells = apply_stored_variant(cells, variant)
        if variant_masks and masks_dir is not None and str(masks_dir) != str(variant_masks):
            other = load_dataset(info.name, root, masks_dir=masks_dir, **load)
            cells = _with_masks(cells, other.masks)
    cells, _ = keep_classes(cells, SweepConfig.from_dict(store.config_dict).options.min_per_class)
    if cells.fingerprint != info.fingerprint:
        raise LeukolearnError(
            f"the images in {root} are not those run {store.path} was trained on "
            f"(now {len(cells)} images, fingerprint {cells.fingerprint[:12]}; the run: "
            f"{info.n_images} images, {info.fingerprint[:12]}); files were changed, added "
            "or removed")
    return cells


def cell_types(store: RunStore, cells: CellImages) -> list[str]:
    """Each image's cell type: its class, or for a binary run loaded with a label table
    the table's type (the run's images are a subset of the table's)."""
    info = store.dataset_info
    table = info.load_options.get("label_table")
    names = [cells.class_names[k] for k in cells.labels]
    if not table or cells.n_classes > 2:
        return names
    from leukolearn.data.dataset import load_dataset

    typed = load_dataset(info.name, info.root, size=info.load_options.get("size"),
                         label_table=table, dedupe=info.load_options.get("dedupe", True),
                         allow_outside_root=info.load_options.get("allow_outside_root", False),
                         progress=False)
    by_id = {i: typed.class_names[k] for i, k in zip(typed.image_ids, typed.labels)}
    return [by_id.get(i, n) for i, n in zip(cells.image_ids, names)]


def _with_masks(cells: CellImages, masks: np.ndarray | None) -> CellImages:
    return replace(cells, masks=masks)  # the same images: fingerprint and source stay


# --------------------------------------------------------------------------- jobs and models


def nearest_sizes(requested: Sequence[int], available: Iterable[int]
                  ) -> tuple[list[int], list[str]]:
    """The available size nearest each requested one (duplicates dropped, order kept), and
    a note for every size that was replaced."""
    available = sorted(set(available))
    if not available:
        raise LeukolearnError("no finished jobs to choose training sizes from")
    chosen, notes = [], []
    for size in requested:
        near = min(available, key=lambda s: (abs(s - size), s))
        if near != size:
            notes.append(f"size {size} not in the run: using the nearest, {near}")
        if near not in chosen:
            chosen.append(near)
    return chosen, notes


def fold_jobs(store: RunStore, fold: int, sizes: Sequence[int]
              ) -> tuple[list[JobRecord], list[str]]:
    """One finished job (replicate 0 if there) of `fold` per size nearest to `sizes`."""
    records = [r for r in store.results() if r.fold == fold]
    if not records:
        folds = sorted({r.fold for r in store.results()})
        raise LeukolearnError(f"fold {fold} has no finished job in {store.path} "
                              f"(folds with jobs: {folds or 'none'})")
    chosen, notes = nearest_sizes(sizes, (r.size for r in records))
    jobs = [min((r for r in records if r.size == s), key=lambda r: r.replicate) for s in chosen]
    return jobs, notes


def job_model(store: RunStore, record: JobRecord):
    """The trained network of a finished job (in eval mode)."""
    from leukolearn.model.weights import load_model

    path = store.weights_path(record.job_id)
    if path is None:
        raise LeukolearnError(f"job {record.job_id} kept no weights in {store.path}")
    return load_model(path)


def unseen_indices(store: RunStore, job_id: str, n_images: int, *, limit: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """Images a job's model never fitted or early-stopped on: its test images plus every
    image left out of its training set (not validation). With `limit`, a seeded random
    subset of that many, which always keeps the test images."""
    train, val, test = store.split(job_id)
    unseen = np.setdiff1d(np.arange(n_images), np.concatenate([train, val]))
    if limit is not None and len(unseen) > limit:
        rest = np.setdiff1d(unseen, test)
        k = max(0, limit - len(test))
        pick = np.random.default_rng(seed).choice(rest, size=k, replace=False)
        unseen = np.union1d(test, pick)
    return unseen


def image_rows(cells: CellImages, image_ids: Sequence[str], test_idx: Sequence[int]
               ) -> tuple[list[int], list[str]]:
    """The indices into `cells` of the images named by `image_ids` (case-insensitive, in
    the order given), and those of the ids that are not among the test images `test_idx`
    (some of a fold's models trained or early-stopped on them)."""
    by_id = {i.lower(): k for k, i in enumerate(cells.image_ids)}
    test = {int(i) for i in test_idx}
    rows, not_test = [], []
    for image_id in image_ids:
        if image_id.lower() not in by_id:
            raise LeukolearnError(f"no image {image_id!r} in the run's dataset "
                                  f"(ids look like {cells.image_ids[0]!r})")
        rows.append(by_id[image_id.lower()])
        if rows[-1] not in test:
            not_test.append(image_id)
    return rows, not_test


def default_rows(test_idx: Sequence[int], labels: np.ndarray, types: Sequence[str],
                 class_names: Sequence[str]) -> list[int]:
    """Fig 4b's rows among a fold's test images (first in test order of each kind): a
    blast, a lymphocyte and a neutrophil when the cell types allow, else one blast and
    two non-blasts."""
    test_idx = [int(i) for i in test_idx]
    if len(set(types)) > 2:
        rows = []
        for word in FIG4B_TYPES:
            hit = next((i for i in test_idx if word in types[i].lower() and i not in rows), None)
            if hit is not None:
                rows.append(hit)
        if len(rows) >= 2:
            return rows
    positive = blast_class(class_names)
    blasts = [i for i in test_idx if labels[i] == positive]
    others = [i for i in test_idx if labels[i] != positive]
    return blasts[:1] + others[:2]


# --------------------------------------------------------------------------- per-job CSV


@dataclass(frozen=True)
class JobTable:
    """Rows of one per-job measure, and how many were reused from an earlier call."""

    rows: list[dict]
    reused: int
    measured: int


def per_job_table(records: Sequence[JobRecord], path: Path, columns: Sequence[str],
                  measure: Callable[[JobRecord], dict], *, same: dict[str, Any],
                  progress: bool = True, what: str = "measuring") -> JobTable:
    """One row per job in the CSV `path`: rows already there for the same job (same
    finish time, same `same` settings) are kept, the others measured. The file is
    rewritten after every job, so an interrupted call loses at most one job's work."""
    old = {}
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                old[row.get("job_id")] = row
    keys = {k: str(v) for k, v in same.items()}
    rows: dict[str, dict] = {}
    todo = []
    for r in records:
        prev = old.get(r.job_id)
        if prev and prev.get("finished_at") == r.finished_at and \
                all(prev.get(k) == v for k, v in keys.items()) and set(columns) <= set(prev):
            rows[r.job_id] = {c: prev[c] for c in columns}
        else:
            todo.append(r)
    reused = len(rows)
    for r in track(todo, what, enabled=progress and bool(todo)):
        values = {"job_id": r.job_id, "fold": r.fold, "size": r.size, "replicate": r.replicate,
                  "finished_at": r.finished_at, **keys, **measure(r)}
        rows[r.job_id] = {c: _csv_cell(values.get(c)) for c in columns}
        _write_rows(path, columns, [rows[x.job_id] for x in records if x.job_id in rows])
    ordered = [rows[r.job_id] for r in records]
    _write_rows(path, columns, ordered)
    return JobTable(ordered, reused, len(todo))


def column(rows: Sequence[dict], name: str) -> np.ndarray:
    """A numeric CSV column as floats (empty cells NaN)."""
    return np.array([float(r[name]) if r[name] not in ("", None) else np.nan for r in rows])


def _csv_cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{float(v):.6g}"
    return "" if v is None else str(v)


def _write_rows(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, columns, [[row.get(c, "") for c in columns] for row in rows])
