"""Running a Plan: one training per Job, results into the run store, resumable.

`run_sweep` skips the jobs the store already holds, so running the same command again
after a crash or Ctrl-C finishes exactly the missing jobs; each job depends on its own
seed only, so the result equals an uninterrupted run. With `jobs=N` the jobs run in N
worker processes (`experiments.workers`: the dataset reaches each worker once, never per
job); the parent is the only process that writes the store. A job computes the same with
any `jobs`: every CPU training runs with the same torch thread count
(`training.threads.TRAINING_THREADS`). What still changes its float sums, the device and the
fused kernels, is recorded per job; a resume that will run otherwise than the stored jobs
ran warns once (`runstore.resume.ran_otherwise`).

A job whose runner raises is recorded as 'failed' with its message (scikit-learn's
learning_curve records a failed fit as NaN and goes on; so do we) and is run again on
resume. Ctrl-C stops at once: finished jobs are already saved, running ones are dropped.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from leukolearn.data.cellimages import CellImages
from leukolearn.errors import LeukolearnError
from leukolearn.progress import progress_bar
from leukolearn.experiments.methods import check_model, runner_for
from leukolearn.experiments.outcome import JobOutcome, Runner
from leukolearn.experiments.protocol import Job, Plan, keep_classes, make_plan
from leukolearn.experiments.workers import attempt, attempt_many, run_parallel
from leukolearn.runstore.resume import HowItRan, ran_otherwise
from leukolearn.runstore.store import DatasetInfo, RunStore
from leukolearn.training.config import not_batchable

from leukolearn.analysis.metrics import METRICS  # the one list of metric names




class TrainingRunner:
    """The real runner: train one network on job.train_idx, test it on job.test_idx."""

    def __init__(self, train_config: Any, metric: str = "auc"):
        if metric not in METRICS:
            raise LeukolearnError(f"unknown metric {metric!r}; choose from {METRICS}")
        self.train_config = train_config
        self.metric = metric

    def __call__(self, cells: CellImages, job: Job) -> JobOutcome:
        from leukolearn.training.loop import train_model

        # train_model fixes its own thread count on the CPU, so a job computes the same in
        # the parent (--jobs 1) as in a worker (--jobs N).
        result = train_model(cells, np.asarray(job.train_idx), np.asarray(job.val_idx),
                             self.train_config, seed=job.seed)
        return self._outcome(cells, job, result)

    def run_many(self, cells: CellImages, jobs: list[Job]) -> list[JobOutcome]:
        """Train the networks of `jobs` together (`leukolearn.training.batched.train_many`): one
        process keeps a GPU busy. Each result equals its job's own training."""
        from leukolearn.training.batched import train_many

        results = train_many(cells, [(job.train_idx, job.val_idx, job.seed) for job in jobs],
                             self.train_config)
        return [self._outcome(cells, job, result) for job, result in zip(jobs, results)]

    def how_it_runs(self, may_touch_cuda: bool = True, batched: bool = False) -> HowItRan | None:
        """How this process's trainings will run: what `_outcome` records per job
        (`batched`: by `run_many`, whose train_many never runs the fused kernels). None
        when that cannot be known here: device "auto" on a CUDA build of torch when
        `may_touch_cuda` is False, because asking CUDA initialises its driver, and worker
        processes forked after that cannot use the GPU."""
        import torch

        from leukolearn.model import kernels
        from leukolearn.training.threads import TRAINING_THREADS

        name = self.train_config.device
        if name == "auto":
            if not may_touch_cuda and torch.backends.cuda.is_built():
                return None
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name != "cpu":  # the kernels are CPU-only; the GPU's sums ignore the threads
            return HowItRan(kernels=False, threads=None, device=name)
        return HowItRan(kernels=not batched and kernels.enabled(), threads=TRAINING_THREADS,
                        device="cpu")

    def _outcome(self, cells: CellImages, job: Job, result: Any) -> JobOutcome:
        from leukolearn.analysis.domain import attach_domain_check
        from leukolearn.analysis.metrics import score
        from leukolearn.training.loop import predict_proba

        # Every job's model carries its domain check (analysis.domain), as `train`'s does.
        if result.model is not None:
            attach_domain_check(result.model, cells.images[np.asarray(job.train_idx)],
                                cells.images[np.asarray(job.val_idx)])
        test_idx = np.asarray(job.test_idx)
        # Inference may use this process's threads: one image's forward pass sums within
        # the image only, and the probabilities are bit-identical with 1 to 4 threads
        # (fused kernels and torch's layers; tests/test_determinism.py).
        probs = predict_proba(result.model, cells.images[test_idx])
        metric = score(self.metric, cells.labels[test_idx], probs)
        return JobOutcome(
            metric=float(metric), best_epoch=result.best_epoch, epochs_run=result.epochs_run,
            seconds=result.seconds, degenerate=result.degenerate, test_probs=probs,
            history=result.history, model=result.model, metric_name=self.metric,
            # train_model and batched.train_many (run_many) both count restarts per job.
            restarts=result.restarts,
            # What the training ran on, as train_model or train_many reports it.
            kernels=result.kernels, threads=result.threads, device=result.device,
        )


@dataclass
class SweepReport:
    planned: int
    skipped: int = 0  # already in the store
    done: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (job_id, message)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.skipped + self.done == self.planned


def run_sweep(cells: CellImages, plan: Plan, store: RunStore, *, runner: Runner, jobs: int = 1,
              progress: bool = True, max_jobs: int | None = None,
              batch_models: int = 1, start_method: str | None = None,
              executor: str = "local", ray_address: str | None = None) -> SweepReport:
    """Run the jobs of `plan` that `store` does not hold yet; `max_jobs` caps how many.

    `executor` "local": `jobs` N > 1 runs N worker processes, started by `start_method`
    (None: the platform's default, see `experiments.workers`). "ray": Ray tasks
    (`experiments.ray_executor`) on a local Ray of `jobs` CPUs, or on the cluster at
    `ray_address`.

    `batch_models` K > 1 (for a GPU): groups of K jobs are trained together by the runner's
    `run_many` (`TrainingRunner.run_many`, `leukolearn.training.batched`), in this process
    or, with Ray, one group per task; a group that raises is recorded as failed, job by job.
    """
    check_workers(jobs, batch_models, executor, ray_address)
    if batch_models > 1 and not hasattr(runner, "run_many"):
        raise LeukolearnError("this runner cannot train several models at once (no run_many)")
    ids = [job.job_id for job in plan]
    if len(set(ids)) != len(ids):
        raise ValueError("the plan has duplicate job ids")
    finished = store.finished_ids()
    todo = [job for job in plan if job.job_id not in finished]
    report = SweepReport(planned=len(plan), skipped=len(plan) - len(todo))
    if max_jobs is not None:
        todo = todo[:max_jobs]
    if todo and finished:
        # Asking CUDA in this process is harmless only when no workers are forked after it.
        _warn_if_ran_otherwise(store, runner, may_touch_cuda=executor == "ray"
                               or batch_models > 1 or jobs == 1 or len(todo) <= 1,
                               batched=batch_models > 1)
    start = time.perf_counter()
    # The bar stays when done: the last job's line is the sweep's record on screen.
    with progress_bar(enabled=progress, transient=False, extra=("{task.fields[note]}",)) as bar:
        task = bar.add_task("[bold]sweep", total=len(todo), note="")

        def save(job: Job, result: JobOutcome | str) -> None:
            if isinstance(result, str):
                store.record_failed(job, result)
                report.failed += 1
                report.failures.append((job.job_id, result))
                if progress:
                    bar.console.print(f"[red]job {job.job_id} failed:[/] {result}")
                bar.update(task, advance=1)
            else:
                store.record_done(job, result, cells.labels[np.asarray(job.test_idx)])
                report.done += 1
                bar.update(task, advance=1,
                           note=f"{job.job_id}: {result.metric_name} {result.metric:.3f}")

        try:
            if executor == "ray":
                from leukolearn.experiments.ray_executor import run_on_ray

                run_on_ray(cells, todo, runner, save, cpus=jobs, address=ray_address,
                           batch_models=batch_models, gpus_per_task=_gpus_per_task(runner))
            elif batch_models > 1:
                for first in range(0, len(todo), batch_models):
                    group = todo[first:first + batch_models]
                    for job, result in zip(group, attempt_many(runner, cells, group)):
                        save(job, result)
            elif jobs == 1 or len(todo) <= 1:
                for job in todo:
                    save(job, attempt(runner, cells, job))
            else:
                run_parallel(cells, todo, runner, jobs, save, start_method)
        except KeyboardInterrupt:
            report.interrupted = True
    report.seconds = time.perf_counter() - start
    return report


def sweep_dataset(cells: CellImages, config: Any, out: str | Path, *, dataset_name: str = "",
                  dataset_root: str | Path = "", load_options: Mapping[str, Any] | None = None,
                  jobs: int = 1, progress: bool = True, runner: Runner | None = None,
                  max_jobs: int | None = None, batch_models: int = 1,
                  start_method: str | None = None, executor: str = "local",
                  ray_address: str | None = None) -> SweepReport:
    """The whole sweep of a SweepConfig on a dataset, into the run directory `out`.

    Drops classes below `config.options.min_per_class`, checks the metric fits the classes,
    makes the plan, opens (or resumes) the store and runs the missing jobs. The dataset's
    name, root and load options default to where `load_dataset` read `cells` from.
    """
    # Everything that can be refused is checked before the run directory is written.
    check_workers(jobs, batch_models, executor, ray_address)
    why = not_batchable(config.train) if batch_models > 1 else None
    if why:
        raise LeukolearnError(f"--batch-models {why}; use --jobs")
    if cells.source is not None:
        dataset_name = dataset_name or cells.source.name
        dataset_root = dataset_root or cells.source.root
        load_options = cells.source.load_options if load_options is None else load_options
    cells, dropped = keep_classes(cells, config.options.min_per_class)
    if config.metric == "auc" and cells.n_classes != 2:
        raise LeukolearnError(
            f"ROC-AUC needs two classes but the dataset has {cells.n_classes} "
            f"({', '.join(cells.class_names[:6])}...); name the blast classes with --positive"
        )
    _check_class_counts(cells, config)
    if runner is None and check_model(config.model).feature_set is None:  # a CNN: fits the input?
        from leukolearn.model.cnn import ModelConfig

        ModelConfig(input_size=cells.size, n_classes=cells.n_classes, class_names=cells.class_names)
    plan = make_plan(config.protocol, cells.labels, config.options)
    info = DatasetInfo.from_cells(cells, dataset_name, dataset_root, load_options=load_options,
                                  dropped_classes=dropped)
    if runner is None:
        runner = runner_for(config) or TrainingRunner(config.train, config.metric)
    with RunStore.create_or_resume(out, config=config, dataset=info, cells=cells) as store:
        return run_sweep(cells, plan, store, runner=runner, jobs=jobs, progress=progress,
                         max_jobs=max_jobs, batch_models=batch_models,
                         start_method=start_method, executor=executor,
                         ray_address=ray_address)


def _check_class_counts(cells: CellImages, config: Any) -> None:
    """Refuse a class without images, and (ROC-AUC, every image tested once) a class with
    fewer images than folds: a test set without it has no AUC, so the sweep would only
    produce NaNs or a score from one lucky fold."""
    counts = cells.class_counts()
    for name, n in counts.items():
        if n == 0:
            raise LeukolearnError(f"class {name!r} has no images (class counts: {counts}); "
                                  "a sweep needs images of every class")
        if config.metric == "auc" and config.protocol != "aml" and n < config.options.folds:
            raise LeukolearnError(
                f"class {name!r} has {n} image(s), fewer than the {config.options.folds} folds: "
                "some test sets would lack it and have no ROC-AUC; lower --folds or add images"
            )


def _warn_if_ran_otherwise(store: RunStore, runner: Any, may_touch_cuda: bool,
                           batched: bool) -> None:
    """One warning when the stored jobs ran on another device, with or without the fused
    kernels, or with other threads than the jobs this runner trains now (`batched`: by its
    run_many). A runner that cannot say how it runs (no `how_it_runs`, e.g. a fake one) is
    not checked."""
    how_it_runs = getattr(runner, "how_it_runs", None)
    now: HowItRan | None = (how_it_runs(may_touch_cuda, batched=batched)
                            if how_it_runs is not None else None)
    if now is None:
        return
    message = ran_otherwise(store.results(), now)
    if message:
        warnings.warn(f"resuming {store.path}: {message}", stacklevel=3)


def check_workers(jobs: int, batch_models: int, executor: str = "local",
                  ray_address: str | None = None) -> None:
    """--jobs, --batch-models, --executor and --ray-address, before any work starts."""
    from leukolearn.experiments.ray_executor import EXECUTORS

    if executor not in EXECUTORS:
        raise LeukolearnError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise LeukolearnError(f"--jobs must be at least 1, got {jobs}")
    if batch_models < 1:
        raise LeukolearnError(f"--batch-models must be at least 1, got {batch_models}")
    # Local processes: K networks in one process keep one GPU busy; N processes of K each
    # would only fight over it. Ray schedules the groups itself, one task each.
    if executor == "local" and batch_models > 1 and jobs > 1:
        raise LeukolearnError("use either --jobs (processes) or --batch-models, not both")
    if ray_address is not None and executor != "ray":
        raise LeukolearnError("--ray-address needs --executor ray")
    if executor == "ray":
        from leukolearn.experiments.ray_executor import import_ray

        import_ray()  # not installed: say so now, not after the data are loaded


def _gpus_per_task(runner: Any) -> float:
    """A Ray task of a CUDA training asks for one GPU (K networks share it with
    --batch-models K); CPU and "auto" trainings ask for none."""
    config = getattr(runner, "train_config", None)
    return 1.0 if str(getattr(config, "device", "cpu")).startswith("cuda") else 0.0
