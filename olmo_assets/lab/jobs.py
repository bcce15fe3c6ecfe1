"""A stage's step and checks as a Slurm job, for the stages a launcher setting sends there.

``eval.launcher: slurm`` sends each evaluation (a checkpoint × task, a checkpoint's
perplexity) to the cluster as a job of its own, and ``curation.launcher: slurm`` each source
shard's tagging and tokenization: a backfill fans out over the cluster's nodes instead of
this machine's cores. The stage command (Dagster's or ``dvc repro``'s) stays here: it writes
the batch script, submits it and follows the job (:func:`olmo_assets.lab.slurm.run_job`: the
job's output streams into the step's output, an interruption cancels it), then reads what
the job reports and records it as it records a local run. The job runs::

    python -m olmo_assets.lab.jobs STAGE [ARGUMENTS...] --repo REPO --result FILE

which runs the step and its checks on its node and writes their results to ``FILE`` (JSON,
on the shared filesystem): the step's metadata, tables and plot paths, each check's
verdict, or the error that stopped it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_assets.lab.params import Lab, SlurmJobParams
from olmo_assets.lab.steps.results import CheckResult, InputError, StepResult, user_error

if TYPE_CHECKING:
    from olmo_assets.lab.pipeline import Artifact, Check, StageRun

__all__ = ["execute_on_slurm", "main"]

Outcomes = list[tuple["Artifact", "Check", CheckResult]]


def execute_on_slurm(lab: Lab, run: StageRun, slurm: SlurmJobParams) -> tuple[StepResult, Outcomes]:
    """Run ``run``'s step and checks as a Slurm job and return what it reports."""
    from olmo_assets.lab.slurm import SlurmJobError, run_job, step_script

    folder = lab.repo / slurm.folder
    folder.mkdir(parents=True, exist_ok=True)
    name = run.dvc_name.replace("@", "-")
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    result = folder / f"{name}-{stamp}.json"
    result.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "olmo_assets.lab.jobs",
        run.stage.name,
        *run.arguments,
        "--repo",
        str(lab.repo),
        "--result",
        str(result),
    ]
    script = folder / f"{name}-{stamp}.sbatch"
    script.write_text(
        step_script(
            command,
            workdir=lab.repo,
            output=folder / f"{name}-%j.out",
            job_name=f"olmo-{run.stage.name}",
            slurm=slurm,
        ),
        encoding="utf-8",
    )
    try:
        run_job(script, lambda job: folder / f"{name}-{job}.out")
    except SlurmJobError as failed:
        report = _read(result)
        if report is None or "error" not in report:
            raise
        where = f"(Slurm job {failed.job_id}, its output: {failed.output})"
        if report["user_error"]:
            raise InputError(f"{report['error']} {where}") from None
        raise RuntimeError(f"{report['error']} {where}") from failed
    report = _read(result)
    if report is None or "step" not in report:
        raise RuntimeError(f"the Slurm job of {run.dvc_name} completed without writing {result}")
    return _step_result(report["step"]), _outcomes(run, report["checks"])


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _step_result(data: dict[str, Any]) -> StepResult:
    return StepResult(
        data["metadata"], data["tables"], {key: Path(p) for key, p in data["images"].items()}
    )


def _outcomes(run: StageRun, checks: list[dict[str, Any]]) -> Outcomes:
    """The job's verdicts, matched to the stage's declared checks (every one, in order)."""
    by_name = {(c["artifact"], c["check"]): c for c in checks}
    outcomes: Outcomes = []
    for artifact, check in run.stage.checks:
        found = by_name.get((artifact.name, check.name))
        if found is None:
            raise RuntimeError(
                f"the Slurm job of {run.dvc_name} reported no verdict for "
                f"{artifact.name}.{check.name}"
            )
        outcomes.append(
            (artifact, check, CheckResult(found["passed"], found["metadata"], found["tables"]))
        )
    return outcomes


def _write(path: Path, report: dict[str, Any]) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(json.dumps(report, default=str), encoding="utf-8")
    os.replace(staging, path)


def main(argv: list[str] | None = None) -> int:
    """What the job runs: the step and its checks here, their results to ``--result``."""
    from olmo_assets.lab.pipeline import parse_run

    parser = argparse.ArgumentParser(prog="python -m olmo_assets.lab.jobs")
    parser.add_argument("stage")
    parser.add_argument("arguments", nargs="*")
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    options = parser.parse_args(argv)
    host = os.uname().nodename
    try:
        lab = Lab.load(options.repo)
        run = parse_run(lab, options.stage, options.arguments)
        print(f"{run.dvc_name} on {host}", flush=True)
        started = time.perf_counter()
        result, checks = run.execute_here(lab)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result.metadata |= {
            "slurm_job": os.environ.get("SLURM_JOB_ID", ""),
            "slurm_node": os.environ.get("SLURMD_NODENAME", host),
            "job_seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(peak_mb, 1),
        }
    except Exception as error:
        if not user_error(error):
            traceback.print_exc()
        message = str(error) if user_error(error) else f"{type(error).__name__}: {error}"
        print(f"{options.stage} {' '.join(options.arguments)} failed: {message}", file=sys.stderr)
        _write(options.result, {"error": message, "user_error": user_error(error)})
        return 1
    _write(
        options.result,
        {
            "step": {
                "metadata": result.metadata,
                "tables": result.tables,
                "images": {key: str(path) for key, path in result.images.items()},
            },
            "checks": [
                {
                    "artifact": artifact.name,
                    "check": check.name,
                    "passed": outcome.passed,
                    "metadata": outcome.metadata,
                    "tables": outcome.tables,
                }
                for artifact, check, outcome in checks
            ],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
