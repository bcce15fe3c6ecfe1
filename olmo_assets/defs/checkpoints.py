"""Continuous evaluation (``eval.continuous: true``): each checkpoint the training run keeps
is evaluated as soon as it is written, while the run goes on.

The ``new_checkpoints`` sensor looks at the run folder every few seconds. Each complete
unsharded checkpoint (``stepN-unsharded``: the trainer renames it into place when written)
becomes a partition of the dynamic partitions ``checkpoints``, and the sensor asks for what
that checkpoint still lacks, in order: its record (``training_checkpoint``), then each task's
and the perplexity evaluation (``evaluation_downstream``, ``evaluation_perplexity``), then a
new model report (``evaluation``) whenever the set of fully evaluated checkpoints grows. What
is done is read from the lab's files, make-style: an output counts when it is newer than
what it was made from, so a retrained run's new checkpoint at the same step is evaluated
again. Each request's run key names the checkpoint's write time: Dagster launches it once,
and a failed run is not retried by the sensor (rerun it from the UI).

``dvc repro`` keeps evaluating ``eval.checkpoints``; the demo does too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dagster import (
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import stage_named
from olmo_assets.lab.report import RESULTS, evaluation_folders, kept_checkpoints

__all__ = [
    "CHECKPOINT_PARTITIONS",
    "checkpoint_partitions",
    "evaluation_requests",
    "new_checkpoints_sensor",
]

CHECKPOINT_PARTITIONS = "checkpoints"
"""The dynamic partitions of the kept checkpoints (continuous evaluation)."""


def checkpoint_partitions() -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=CHECKPOINT_PARTITIONS)


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else -1


def evaluation_requests(lab: Lab) -> tuple[list[str], list[RunRequest]]:
    """The kept checkpoints (as partition keys) and the runs they still need."""
    from olmo_assets.defs.assets import CHECKPOINT_DIMENSION, TASK_DIMENSION
    from olmo_assets.defs.location import job_name

    checkpoint_job = job_name(stage_named("checkpoint"))
    downstream_job = job_name(stage_named("downstream"))
    perplexity_job = job_name(stage_named("perplexity"))
    report_job = job_name(stage_named("model_report"))
    requests, evaluated = [], []
    kept = kept_checkpoints(lab)
    for step in kept:
        key = str(step)
        written = _mtime(lab.checkpoint(step))
        version = f"{key}-{written}"
        record = _mtime(lab.checkpoint_record(step) / "checkpoint.json")
        if record < written:
            requests.append(
                RunRequest(
                    job_name=checkpoint_job, partition_key=key, run_key=f"checkpoint-{version}"
                )
            )
            continue
        stale = [
            folder for folder in evaluation_folders(lab, step) if _mtime(folder / RESULTS) < record
        ]
        for task in lab.params.eval.tasks:
            if lab.downstream(step, task) in stale:
                partition = MultiPartitionKey({CHECKPOINT_DIMENSION: key, TASK_DIMENSION: task})
                requests.append(
                    RunRequest(
                        job_name=downstream_job,
                        partition_key=partition,
                        run_key=f"downstream-{task}-{version}",
                    )
                )
        if lab.perplexity(step) in stale:
            requests.append(
                RunRequest(
                    job_name=perplexity_job, partition_key=key, run_key=f"perplexity-{version}"
                )
            )
        if not stale:
            evaluated.append(version)
    report = _mtime(lab.model_report / "metrics.json")
    newest = max(
        (_mtime(folder / RESULTS) for step in kept for folder in evaluation_folders(lab, step)),
        default=-1,
    )
    if evaluated and newest > report:
        versions = hashlib.sha256("\n".join(evaluated).encode()).hexdigest()[:16]
        requests.append(RunRequest(job_name=report_job, run_key=f"model_report-{versions}"))
    return [str(step) for step in kept], requests


def new_checkpoints_sensor(lab: Lab, jobs: list[Any]) -> SensorDefinition:
    """``new_checkpoints``: every 15 seconds, register kept checkpoints and request their
    evaluations (see the module's docstring)."""

    @sensor(
        name="new_checkpoints",
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        jobs=jobs,
        description="Each checkpoint the training run keeps becomes a partition of "
        "`checkpoints`; its record, evaluations and a new model report follow, while "
        "training goes on (eval.continuous).",
    )
    def new_checkpoints(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        current = Lab.load(lab.repo)
        keys, requests = evaluation_requests(current)
        known = set(context.instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS))
        new = [key for key in keys if key not in known]
        if new:
            context.instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS, new)
            context.log.info(f"new checkpoints: {', '.join(new)}")
        if not requests:
            return SkipReason(f"{len(keys)} checkpoint(s), nothing left to evaluate")
        return SensorResult(run_requests=requests)

    return new_checkpoints
