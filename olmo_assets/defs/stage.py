"""The stage command: run one stage of the pipeline and record it in Dagster and DVC.

    python -m olmo_assets.defs.stage <stage> [arguments...]
    python -m olmo_assets.defs.stage tag code
    python -m olmo_assets.defs.stage downstream 100 arc_easy

The one command both entry points run: a Dagster asset launches it through Pipes, and each
stage of ``dvc.yaml`` names it as its ``cmd``. On the lab at hand (``OLMO_LAB_REPO``, else
the repository above the working directory) it runs the stage's step, then its checks, and
records the outcome where the launcher did not (:mod:`olmo_assets.defs.record`): Dagster
gets a materialization per artifact and a result per check, DVC gets the stage committed.

The exit status is non-zero when the step fails (the message names the cause, such as a
missing input's path) and, outside Pipes, when a check fails (so ``dvc repro`` stops and
records nothing); under Pipes a failed check is Dagster's to act on (the checks block).
Interrupted (Ctrl-C, a cancelled run, its launcher killed), it stops every process it
started and leaves no partial output.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import resource
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from olmo_assets.defs.record import (
    StageRecord,
    build_record,
    check_partition,
    commit_to_dvc,
    dvc_executable,
    record_in_dagster,
    report_through_pipes,
)
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import STAGES, StageRun, parse_run
from olmo_assets.lab.processes import (
    FAILURE_FILE,
    children_stop_with_this_process,
    stop_with_parent,
)
from olmo_assets.lab.progress import PREFIX, reporting_to
from olmo_assets.lab.steps.results import user_error

__all__ = ["describe", "main", "run_stage"]


def describe(error: BaseException) -> str:
    """A user's mistake by its message alone (:func:`user_error`); a bug with its type."""
    if user_error(error):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextmanager
def _one_writer(lab: Lab, run: StageRun) -> Iterator[None]:
    """One writer per output: a second run of the same stage waits here (Dagster and
    ``dvc repro`` at once, or two runs of one partition)."""
    folder = lab.root / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^\w@.-]", "_", run.dvc_name) + ".lock")
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run of {run.dvc_name} ({path})", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _peak_memory() -> dict[str, float]:
    """Peak resident memory (MB) of this process and of its largest finished child (the
    step's workers, torchrun), as the kernel counts them."""
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20  # KB on Linux, bytes on macOS
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return {"peak_rss_mb": round(own, 1), "peak_rss_child_mb": round(children, 1)}


def _execute(lab: Lab, run: StageRun, *, commit: bool, launched_by: str) -> StageRecord:
    """Run the stage and its checks; commit it to DVC if asked and every check passed. The
    lock covers hashing and committing: the folders must not change until recorded."""
    dvc = dvc_executable(lab) if commit else None
    with _one_writer(lab, run), children_stop_with_this_process():
        started = time.perf_counter()
        result, checks = run.execute(lab)
        seconds = time.perf_counter() - started
        # A step run as a Slurm job reports its own peak memory (olmo_assets.lab.jobs).
        result.metadata = _peak_memory() | result.metadata
        if lab.params.storage and all(outcome.passed for _, _, outcome in checks):
            from olmo_assets.lab.storage import publish

            folders = [run.folder(lab, artifact) for artifact in run.stage.writes]
            # An artifact inside another (the validation splits in the curated corpus) goes
            # with it.
            outer = [f for f in folders if not any(f.is_relative_to(o) and f != o for o in folders)]
            result.metadata["stored_at"] = ", ".join(publish(lab, outer))
        record = build_record(lab, run, result, checks, seconds, launched_by)
        if commit and record.passed:
            print(commit_to_dvc(lab, run, dvc), flush=True)
        elif commit:
            print(f"not committed to DVC: {run.dvc_name} failed a check", flush=True)
    return record


def run_stage(lab: Lab, run: StageRun) -> int:
    """Run and record one stage; the exit status."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if PipesEnvVarParamsLoader().is_dagster_pipes_process():
        stop_with_parent()
        with (
            open_dagster_pipes() as pipes,
            reporting_to(lambda line: pipes.log.info(PREFIX + line)),
        ):
            try:
                check_partition(run, pipes)
                record = _execute(lab, run, commit=True, launched_by="dagster")
                report_through_pipes(record, pipes)
            except Exception as error:
                pipes.log.error(f"{' '.join(run.command)} failed: {describe(error)}")
                failure = os.environ.get(FAILURE_FILE)
                if failure:  # the launcher's step fails with this (olmo_assets.defs.assets)
                    Path(failure).write_text(describe(error), encoding="utf-8")
                raise
            print(record.summary(), flush=True)
            pipes.log.info(record.summary())
        return 0
    # DVC sets DVC_STAGE for the commands it runs, and records them itself.
    by_dvc = "DVC_STAGE" in os.environ
    record = _execute(lab, run, commit=not by_dvc, launched_by="dvc" if by_dvc else "shell")
    run_id = record_in_dagster(lab, record)
    print(record.summary(), flush=True)
    print(f"  recorded in Dagster ({os.environ['DAGSTER_HOME']}) as run {run_id}", flush=True)
    if not record.passed:
        failed = ", ".join(f"{c.key}.{c.name}" for c in record.checks if not c.passed)
        print(f"stage {run.dvc_name}: check(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m olmo_assets.defs.stage",
        description="Run one stage of the pipeline and record it in Dagster and DVC.",
    )
    parser.add_argument("stage", choices=[s.name for s in STAGES], help="the stage")
    parser.add_argument(
        "arguments", nargs="*", help="its arguments: a source, or a checkpoint step (and task)"
    )
    options = parser.parse_args(argv)
    shown = " ".join([options.stage, *options.arguments])
    try:
        lab = Lab.load()
        return run_stage(lab, parse_run(lab, options.stage, options.arguments))
    except KeyboardInterrupt as stopped:
        print(f"stage {shown}: {stopped or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as error:
        if not user_error(error):
            traceback.print_exc()
        print(f"stage {shown} failed: {describe(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
