"""The stage command: run one pipeline step and record it in Dagster.

    python -m olmo_assets.defs.stage <step> [arguments...]
    python -m olmo_assets.defs.stage tag code
    python -m olmo_assets.defs.stage downstream 80 arc_easy

The one command both entry points run: a Dagster asset launches it through Pipes, and each
stage of ``dvc.yaml`` names it as its ``cmd``. It runs
:func:`olmo_assets.lab.steps.run_step` on the lab at hand (``OLMO_LAB_REPO`` or the repository
above the working directory), prints a short summary, and records the result:

* launched by Dagster (``DAGSTER_PIPES_CONTEXT`` in the environment): a materialization per
  asset the step writes, with metadata and its data version, and a result per asset check,
  all through Dagster Pipes, on the launching run (and its partition);
* otherwise: the same, as runless events in the Dagster instance at ``$DAGSTER_HOME``
  (``<repo>/.dagster`` unless set), so the UI shows what ``dvc repro`` built.

A data version is DVC's content hash of the artifact's folder. The exit status is non-zero
when the step fails (the message names the cause, e.g. a missing input's path) and, outside
Pipes, when a check fails; under Pipes a failed check is Dagster's to act on (the checks
are blocking).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from olmo_assets.defs.catalog import (
    ARTIFACTS,
    artifacts_of,
    code_version,
    data_version,
    partition_key,
)
from olmo_assets.defs.metadata import (
    Entries,
    artifact_metadata,
    check_metadata,
    git_metadata,
    stage_command_line,
)
from olmo_assets.defs.record import CheckRecord, MaterializationRecord
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps import STEPS, CheckResult, StepResult, run_step
from olmo_nn.config import ConfigError

__all__ = ["STAGE_ERROR", "StageRun", "describe", "main", "run_stage"]

# The Pipes custom message naming why the stage failed (olmo_assets.defs.launch reads it).
STAGE_ERROR = "stage_error"

# Mistakes a user can fix from the message alone (no traceback needed).
USER_ERRORS = (FileNotFoundError, ValueError, KeyError, ConfigError)


class StageRun:
    """One step run: its result and what to record for each artifact and check."""

    def __init__(self, lab: Lab, step: str, arguments: tuple[str, ...]) -> None:
        self.lab, self.step, self.arguments = lab, step, arguments
        _check_arguments(lab, step, arguments)
        self.artifacts = artifacts_of(step)
        self.command = stage_command_line(step, arguments)

    def run(self) -> StepResult:
        started = time.perf_counter()
        self.result = run_step(self.lab, self.step, *self.arguments)
        self.seconds = time.perf_counter() - started
        return self.result

    def materializations(self) -> list[MaterializationRecord]:
        git = git_metadata()
        records = []
        for index, artifact in enumerate(self.artifacts):
            folder = artifact.folder(self.lab, *self.arguments)
            if not folder.exists():
                raise FileNotFoundError(
                    f"step {self.step!r} finished but {folder} ({artifact.key}) does not exist"
                )
            version = data_version(folder)
            metadata = artifact_metadata(
                self.lab,
                artifact,
                folder=folder,
                data_version=version,
                result=self.result,
                primary=index == 0,
                command=self.command,
                seconds=self.seconds,
                git=git,
            )
            records.append(
                MaterializationRecord(
                    artifact,
                    partition_key(artifact, self.arguments),
                    version,
                    code_version(self.lab, self.step),
                    metadata,
                )
            )
        return records

    def checks(self) -> list[CheckRecord]:
        """The declared checks' results; a declared check the step did not return fails."""
        declared = {name for artifact in self.artifacts for name in artifact.checks}
        for name in sorted(set(self.result.checks) - declared):
            print(
                f"warning: step {self.step!r} returned check {name!r}, which no asset declares "
                "(olmo_assets/defs/catalog.py); it is not recorded",
                file=sys.stderr,
            )
        records = []
        for artifact in self.artifacts:
            partition = partition_key(artifact, self.arguments)
            for name in artifact.checks:
                check = self.result.checks.get(
                    name, CheckResult(False, f"step {self.step!r} returned no result for {name!r}")
                )
                records.append(
                    CheckRecord(
                        artifact,
                        name,
                        check.passed,
                        check.description,
                        check_metadata(check, partition),
                    )
                )
        return records

    def summary(self, records: list[MaterializationRecord], checks: list[CheckRecord]) -> str:
        lines = [f"{self.command}: done in {self.seconds:.1f}s"]
        for record in records:
            where = f"[{record.partition}]" if record.partition is not None else ""
            lines.append(f"  {record.artifact.key}{where}: data version {record.data_version}")
        numbers = [f"{k}={v}" for k, v in self.result.metadata.items() if _is_short(v)]
        if numbers:
            lines.append("  " + ", ".join(numbers))
        for check in checks:
            verdict = "passed" if check.passed else "FAILED"
            lines.append(f"  check {check.artifact.key}.{check.name}: {verdict}")
        return "\n".join(lines)


def _check_arguments(lab: Lab, step: str, arguments: tuple[str, ...]) -> None:
    """A source must be one params.yaml names; a checkpoint or task outside ``eval`` is
    allowed (the step runs), but it is no partition of the Dagster assets."""
    kinds = STEPS[step].arguments if step in STEPS else ()
    for kind, value in zip(kinds, arguments, strict=False):
        if kind == "source" and value not in lab.params.sources:
            raise KeyError(
                f"unknown source {value!r}; params.yaml names {', '.join(lab.params.sources)}"
            )
        known = {
            "step": [str(s) for s in lab.params.eval.checkpoints],
            "task": lab.params.eval.tasks,
        }
        if kind in known and value not in known[kind]:
            print(
                f"warning: {kind} {value!r} is not in params.yaml's eval section "
                f"({', '.join(map(str, known[kind]))}): Dagster has no such partition",
                file=sys.stderr,
            )


def describe(error: BaseException) -> str:
    # KeyError's str() quotes its message; its first argument is the message itself.
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return f"{type(error).__name__}: {message}"


def _is_short(value: Any) -> bool:
    return isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) < 80)


@contextmanager
def _step_lock(lab: Lab, step: str, arguments: tuple[str, ...]) -> Iterator[None]:
    """One writer per output: a second run of the same step and arguments waits here (Dagster
    and ``dvc repro`` at once, or two runs of one partition)."""
    folder = lab.root / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("-".join((step, *arguments)) + ".lock")
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run of {step} {' '.join(arguments)} ({path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stop_with_parent() -> None:
    """Ask Linux to SIGTERM this process if the Dagster step process that launched it dies
    (killed outright, it cannot stop its children itself); the train step forwards that to
    its torchrun process group."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _report_through_pipes(stage: StageRun, pipes: Any) -> tuple[list, list]:
    records, checks = stage.materializations(), stage.checks()
    in_scope = set(pipes.asset_keys)
    for record in records:
        key = record.artifact.key
        if key not in in_scope:
            continue
        partitioned = record.partition is not None and pipes.is_partition_step
        if partitioned and pipes.partition_key != record.partition:
            raise ValueError(
                f"{key}: the run's partition is {pipes.partition_key!r} but the step "
                f"wrote {record.partition!r} ({stage.command})"
            )
        pipes.report_asset_materialization(
            metadata=record.metadata, data_version=record.data_version, asset_key=key
        )
    for check in checks:
        if check.artifact.key in in_scope:
            metadata: Entries = check.metadata
            pipes.report_asset_check(
                check.name,
                check.passed,
                severity="ERROR",
                metadata=metadata,
                asset_key=check.artifact.key,
            )
    return records, checks


def run_stage(lab: Lab, step: str, arguments: tuple[str, ...]) -> int:
    """Run ``step`` and record it (Pipes when launched by Dagster); the exit status."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    stage = StageRun(lab, step, arguments)
    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        _stop_with_parent()
        with open_dagster_pipes() as pipes:
            try:
                # The lock covers hashing too: the folder must not change until recorded.
                with _step_lock(lab, step, arguments):
                    stage.run()
                    records, checks = _report_through_pipes(stage, pipes)
            except Exception as error:
                pipes.report_custom_message({STAGE_ERROR: describe(error)})
                raise
            summary = stage.summary(records, checks)
            print(summary, flush=True)
            pipes.log.info(summary)
        return 0

    from olmo_assets.defs.record import dagster_instance, record_runless

    instance = dagster_instance(lab)
    with _step_lock(lab, step, arguments):
        stage.run()
        records, checks = stage.materializations(), stage.checks()
        record_runless(instance, records, checks)
    print(stage.summary(records, checks), flush=True)
    print(f"  recorded in the Dagster instance at {os.environ['DAGSTER_HOME']}", flush=True)
    failed = [f"{c.artifact.key}.{c.name}" for c in checks if not c.passed]
    if failed:
        print(f"stage {stage.command}: check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    steps = sorted({artifact.step for artifact in ARTIFACTS})
    parser = argparse.ArgumentParser(
        prog="python -m olmo_assets.defs.stage",
        description="Run one pipeline step and record its assets in Dagster (Pipes or runless).",
    )
    parser.add_argument("step", choices=steps, help="the step (olmo_assets.lab.steps.STEPS)")
    parser.add_argument(
        "arguments", nargs="*", help="its arguments: a source, a checkpoint step, a task"
    )
    options = parser.parse_args(argv)
    command = stage_command_line(options.step, tuple(options.arguments))
    try:
        lab = Lab.load()
        return run_stage(lab, options.step, tuple(options.arguments))
    except Exception as error:
        if not isinstance(error, USER_ERRORS):
            traceback.print_exc()
        print(f"stage {command} failed: {describe(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
