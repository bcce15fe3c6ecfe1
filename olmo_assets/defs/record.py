"""A stage's outcome, recorded in Dagster and in DVC — whichever of them did not run it.

:func:`build_record` turns a run's :class:`~olmo_assets.lab.steps.results.StepResult` and
check results into one :class:`StageRecord`: a materialization per artifact (data version =
DVC's content hash of its folder, metadata) and a result per check. Then:

* launched by Dagster (Pipes): :func:`report_through_pipes` sends it to the run, and
  :func:`commit_to_dvc` records the stage in ``dvc.lock`` and DVC's cache
  (``dvc commit``, under DVC's own lock), so ``dvc status`` agrees;
* launched by ``dvc repro``: DVC records the stage itself; :func:`record_in_dagster` runs a
  Dagster materialization of the stage's assets whose body replays the record, so Dagster
  writes its own provenance (code version, input data versions) exactly as for a UI run;
* launched from a shell: both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from olmo_assets.defs.metadata import (
    Entries,
    Input,
    artifact_metadata,
    check_metadata,
    git_metadata,
    plot_metadata,
)
from olmo_assets.lab.database import dagster_home, database_url, store_lock
from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import Artifact, Check, StageRun, inputs
from olmo_assets.lab.steps.results import CheckResult, StepResult

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = [
    "RECORDED_BY_TAG",
    "StageRecord",
    "build_record",
    "check_partition",
    "commit_to_dvc",
    "dagster_instance",
    "dvc_executable",
    "record_in_dagster",
    "report_through_pipes",
]

RECORDED_BY_TAG = "olmo/recorded_by"
"""Run tag of a materialization recorded after the step ran elsewhere: ``dvc`` or ``shell``."""


@dataclass
class Materialization:
    key: str
    """The asset key as Dagster writes it for users: ``raw_source/code``."""
    data_version: str
    metadata: Entries


@dataclass
class CheckOutcome:
    key: str
    name: str
    passed: bool
    metadata: Entries


@dataclass
class StageRecord:
    run: StageRun
    result: StepResult
    seconds: float
    launched_by: str
    """Who ran the step: a key of :data:`~olmo_assets.defs.metadata.LAUNCHERS`."""
    materializations: list[Materialization] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def summary(self) -> str:
        lines = [f"{' '.join(self.run.command)}: done in {self.seconds:.1f}s"]
        where = f"[{self.run.partition}]" if self.run.partition else ""
        for item in self.materializations:
            lines.append(f"  {item.key}{where}: data version {item.data_version}")
        numbers = [f"{k}={v}" for k, v in self.result.metadata.items() if _is_short(v)]
        if numbers:
            lines.append("  " + ", ".join(numbers))
        for check in self.checks:
            verdict = "passed" if check.passed else "FAILED"
            found = ", ".join(
                f"{k}={v['raw_value']}"
                for k, v in check.metadata.items()
                if k != "description" and "\n" not in str(v["raw_value"])
            )
            lines.append(f"  check {check.key}.{check.name}: {verdict} ({found})")
        return "\n".join(lines)


def _is_short(value: Any) -> bool:
    return isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) < 80)


def read_inputs(lab: Lab, run: StageRun) -> list[Input]:
    """What ``run`` read, each with its data version now (DVC's hash of its folder: what
    ``dvc commit`` records as the stage's dependency, and the upstream's data version)."""
    found = []
    for upstream, artifact in inputs(lab, run):
        folder = upstream.folder(lab, artifact)
        version = dvc_md5(folder) if folder.exists() else "missing"
        found.append(Input(upstream.asset_path(artifact), upstream.partition, version))
    return found


def build_record(
    lab: Lab,
    run: StageRun,
    result: StepResult,
    checks: list[tuple[Artifact, Check, CheckResult]],
    seconds: float,
    launched_by: str,
) -> StageRecord:
    """The stage's outcome as materializations and check results (``launched_by``: a key of
    :data:`~olmo_assets.defs.metadata.LAUNCHERS`)."""
    record = StageRecord(run, result, seconds, launched_by)
    git = git_metadata()
    read = read_inputs(lab, run)
    plots = plot_metadata(lab, result)
    for index, artifact in enumerate(run.stage.writes):
        folder = run.folder(lab, artifact)
        if not folder.exists():
            raise FileNotFoundError(
                f"stage {run.dvc_name} finished but {folder} ({artifact.name}) does not exist"
            )
        version = dvc_md5(folder)
        metadata = artifact_metadata(
            lab,
            folder=folder,
            data_version=version,
            result=result,
            primary=index == 0,
            command=" ".join(run.command),
            seconds=seconds,
            git=git,
            inputs=read,
            launched_by=launched_by,
            plots=plots,
        )
        record.materializations.append(
            Materialization("/".join(run.asset_path(artifact)), version, metadata)
        )
    for artifact, check, outcome in checks:
        record.checks.append(
            CheckOutcome(
                "/".join(run.asset_path(artifact)),
                check.name,
                outcome.passed,
                check_metadata(outcome, check.description, run.partition),
            )
        )
    return record


def check_partition(run: StageRun, pipes: Any) -> None:
    """Refuse, before any work, a run whose arguments are not the Dagster run's partition."""
    partition = run.partition
    if partition is not None and pipes.is_partition_step and pipes.partition_key != partition:
        raise ValueError(
            f"the Dagster run's partition is {pipes.partition_key!r} but the stage was launched "
            f"for {partition!r} ({' '.join(run.command)})"
        )


def report_through_pipes(record: StageRecord, pipes: Any) -> None:
    """Report the record to the Dagster run that launched the stage (Pipes)."""
    in_scope = set(pipes.asset_keys)
    for item in record.materializations:
        if item.key in in_scope:
            pipes.report_asset_materialization(
                metadata=item.metadata, data_version=item.data_version, asset_key=item.key
            )
    for check in record.checks:
        if check.key in in_scope:
            pipes.report_asset_check(
                check.name,
                check.passed,
                severity="ERROR",
                metadata=check.metadata,
                asset_key=check.key,
            )


def dagster_instance(lab: Lab) -> DagsterInstance:
    """The instance at ``$DAGSTER_HOME``; unset, it is ``<repo>/.dagster`` (created if needed).
    With ``OLMO_LAB_DATABASE_URL`` set, its storage is on PostgreSQL
    (:func:`olmo_assets.lab.database.dagster_home`); ``DAGSTER_HOME`` names that folder
    afterwards, for the processes this one starts."""
    from dagster import DagsterInstance

    home = dagster_home(lab.repo)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    # Opening an instance creates a new store's tables, which processes that start at once
    # would race to do ("table alembic_version already exists"): one at a time, under a lock
    # beside it (and PostgreSQL's advisory lock, for other machines).
    url = database_url()
    with open(home / ".instance.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with store_lock(url) if url else contextlib.nullcontext():
            return DagsterInstance.get()


def record_in_dagster(lab: Lab, record: StageRecord) -> str:
    """A run of the stage's named job (``evaluation_downstream``, …) that materializes its
    assets by replaying ``record``, tagged with who ran the step (``olmo/recorded_by``); its
    id."""
    from dagster import (
        AssetCheckResult,
        AssetCheckSeverity,
        AssetKey,
        DataVersion,
        Definitions,
        MaterializeResult,
    )

    from olmo_assets.defs.assets import build_assets
    from olmo_assets.defs.location import build_jobs, job_name
    from olmo_assets.defs.metadata import to_dagster

    def replay(_context: Any, run: StageRun) -> Any:
        for item in record.materializations:
            yield MaterializeResult(
                asset_key=AssetKey.from_user_string(item.key),
                metadata=to_dagster(item.metadata),
                data_version=DataVersion(item.data_version),
            )
        for check in record.checks:
            yield AssetCheckResult(
                asset_key=AssetKey.from_user_string(check.key),
                check_name=check.name,
                passed=check.passed,
                metadata=to_dagster(check.metadata),
                severity=AssetCheckSeverity.ERROR,
            )

    instance = dagster_instance(lab)
    source = record.run.keys.get("source")
    if source is not None and record.run.partition is not None:
        # A shard's partition exists once registered (`olmo lab shards`); recording it
        # registers it too, so a shard run by DVC alone is recorded all the same.
        from olmo_assets.defs.assets import shard_partitions

        name = str(shard_partitions(source).name)
        if not instance.has_dynamic_partition(name, record.run.partition):
            instance.add_dynamic_partitions(name, [record.run.partition])
    job = Definitions(assets=build_assets(lab, replay), jobs=build_jobs(lab)).resolve_job_def(
        job_name(record.run.stage, record.run.keys.get("source"))
    )
    result = job.execute_in_process(
        asset_selection=[AssetKey.from_user_string(item.key) for item in record.materializations],
        partition_key=record.run.partition,
        instance=instance,
        tags={RECORDED_BY_TAG: record.launched_by, "olmo/stage": record.run.dvc_name},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    # A failed check is blocking, so it fails the run too: that is the record, not a fault.
    recorded = {
        e.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }
    lost = [m.key for m in record.materializations if m.key not in recorded]
    if lost or (not result.success and record.passed):
        failures = [e.message for e in result.all_events if e.is_failure and e.message]
        raise RuntimeError(
            f"recording {record.run.dvc_name} in Dagster failed (run {result.run_id}): "
            + ("; ".join(failures) or f"no materialization of {', '.join(lost)}")
        )
    return str(result.run_id)


def dvc_executable(lab: Lab) -> str | None:
    """The ``dvc`` to commit with; ``None`` when the lab is no DVC repository. Called before a
    stage runs, so a missing ``dvc`` is found before the work, not after it."""
    if not (lab.repo / ".dvc").is_dir():
        return None
    dvc = shutil.which("dvc")
    if dvc is None:
        raise FileNotFoundError(
            "dvc is not on PATH, so this stage could not be recorded in dvc.lock: `make install` "
            "creates .venv-dvc; put .venv-dvc/bin on PATH (the Makefile does) and rerun"
        )
    return dvc


#: What DVC says when another DVC process holds its repository lock, or (while `dvc repro`
#: runs a stage) a lock on one of this stage's paths: both are worth waiting for.
_BUSY = ("Unable to acquire lock", "is busy")
#: How long a commit waits for another DVC process before giving up.
COMMIT_PATIENCE_SECONDS = 3600.0


def commit_to_dvc(lab: Lab, run: StageRun, dvc: str | None) -> str:
    """``dvc commit`` the stage (lock entry and cache), waiting for other DVC processes (their
    repository lock, and the locks ``dvc repro`` keeps on a running stage's paths)."""
    if dvc is None:
        return f"{lab.repo} is not a DVC repository: nothing committed to DVC"
    command = [dvc, "--wait-for-lock", "commit", "--force", "--quiet", run.dvc_name]
    deadline, pause, said = time.monotonic() + COMMIT_PATIENCE_SECONDS, 1.0, False
    while True:
        done = subprocess.run(
            command,
            cwd=lab.repo,
            env={**os.environ, "DVC_NO_ANALYTICS": "1"},
            capture_output=True,
            text=True,
        )
        message = (done.stderr or done.stdout).strip()
        if done.returncode == 0:
            return f"committed to DVC: {run.dvc_name} (dvc.lock and the cache)"
        if not any(busy in message for busy in _BUSY) or time.monotonic() > deadline:
            raise RuntimeError(f"`dvc commit {run.dvc_name}` failed ({done.returncode}): {message}")
        if not said:
            print(
                f"waiting for another DVC process to commit {run.dvc_name}: {message}", flush=True
            )
            said = True
        time.sleep(pause)
        pause = min(pause * 2, 15.0)
