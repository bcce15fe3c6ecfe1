"""Training as a Slurm batch job: the sbatch script, its submission, and the job followed to
its end.

:func:`sbatch_script` writes what a cluster user would write by hand: one task per node
(``srun``), each starting ``torchrun`` for that node's GPUs (or processes), which meet on the
first node's address through PyTorch's c10d rendezvous keyed by the job id. :func:`run_job`
submits it (``sbatch --parsable``) and follows it: the job's output file is copied to this
process's output as it grows (a Dagster run's logs, ``dvc repro``'s terminal), ``poll`` is
called meanwhile (the training progress), and the job's final state becomes success or a
:class:`SlurmJobError` that names it. Interrupted (Ctrl-C, a cancelled Dagster run), it
``scancel``\\ s the job before it returns: nothing keeps running.

Nothing here imports Dagster or DVC; the Slurm commands come from ``PATH`` and find their
cluster as any client does (``SLURM_CONF`` or ``/etc/slurm``).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from olmo_assets.lab.processes import best_effort

__all__ = [
    "FINAL_STATES",
    "JobState",
    "SlurmJobError",
    "job_state",
    "run_job",
    "sbatch_script",
    "step_script",
    "submit",
]

FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
"""The states a job ends in (``scontrol show job``'s ``JobState``)."""

_FIELD = re.compile(r"(\w+)=(\S*)")


class SlurmJobError(RuntimeError):
    """A Slurm job that did not complete: its id, final state and exit code."""

    def __init__(self, job_id: str, state: str, exit_code: str, output: Path) -> None:
        self.job_id, self.state, self.exit_code, self.output = job_id, state, exit_code, output
        super().__init__(
            f"Slurm job {job_id} ended {state} (exit code {exit_code}); its output: {output}"
        )


@dataclass(frozen=True)
class JobState:
    state: str
    exit_code: str
    """``<code>:<signal>`` as Slurm writes it."""
    restarts: int = 0
    """How many times the job was requeued."""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def sbatch_script(
    *,
    command: Sequence[str],
    torchrun: Sequence[str],
    nodes: int,
    processes_per_node: int,
    workdir: Path,
    output: Path,
    job_name: str = "olmo-train",
    gpus_per_node: int = 0,
    cpus_per_node: int | None = None,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    time_limit: str | None = None,
    sbatch_lines: Sequence[str] = (),
    setup: Sequence[str] = (),
    rdzv_port: int = 29500,
    run_dir: Path | None = None,
    signal_seconds: int = 0,
) -> str:
    """The batch script: ``#SBATCH`` options, the environment ``setup`` lines, then one
    ``torchrun`` per node (``torchrun`` is how to start it, e.g. ``python -m
    torch.distributed.run``; ``command`` what it runs, e.g. ``-m olmo_nn.cli.main train
    …``). ``output`` takes the job's stdout and stderr (``%j`` is the job id).

    With the trainer's ``run_dir``, the job stops and resumes on a warning: Slurm sends this
    script ``USR1`` ``signal_seconds`` before the time limit (``--signal=B:USR1@N``; also
    ``scancel --batch --signal=USR1``), the script asks the trainer to save and stop
    (:mod:`olmo_nn.train.stop`), and once the trainer has, requeues the job, which resumes
    from that checkpoint."""
    from olmo_nn.train.stop import STOP_REQUEST_FILE, STOPPED_FILE

    options = _options(
        job_name, nodes, output, gpus_per_node, cpus_per_node, partition, account, qos, time_limit
    )
    if run_dir is not None:
        if signal_seconds:
            options.append(f"--signal=B:USR1@{signal_seconds}")
        options.append("--requeue")
    options += [line.removeprefix("#SBATCH").strip() for line in sbatch_lines]
    launch = [
        *torchrun,
        "--nnodes=$SLURM_JOB_NUM_NODES",
        f"--nproc-per-node={processes_per_node}",
        "--rdzv-backend=c10d",
        '--rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"',
        '--rdzv-id="$SLURM_JOB_ID"',
        *(shlex.quote(part) for part in command),
    ]
    stopping: list[str] = []
    finish = ["srun --kill-on-bad-exit=1 " + " ".join(launch)]
    if run_dir is not None:
        request = shlex.quote(str(run_dir / STOP_REQUEST_FILE))
        stopped = shlex.quote(str(run_dir / STOPPED_FILE))
        stopping = [
            "# Warned (USR1) of the time limit, ask the trainer to save and stop.",
            f"rm -f {request} {stopped}",
            "trap 'echo \"job $SLURM_JOB_ID: warned (USR1): asking the trainer to save a "
            f"checkpoint and stop\"; touch {request}' USR1",
        ]
        finish = [
            f"{finish[0]} &",
            "launch=$!",
            "while :; do",
            '  status=0; wait "$launch" || status=$?',
            '  kill -0 "$launch" 2>/dev/null || break  # else the warning interrupted the wait',
            "done",
            "# The trainer saved and stopped: requeue the job, which resumes from there.",
            f"if [ -f {stopped} ]; then",
            '  echo "job $SLURM_JOB_ID: the trainer saved and stopped; requeueing the job"',
            '  scontrol requeue "$SLURM_JOB_ID"',
            "  exit 0",
            "fi",
            'exit "$status"',
        ]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in options),
        "# Written by the lab's train step (olmo_assets/lab/slurm.py).",
        "set -euo pipefail",
        *setup,
        f"cd {shlex.quote(str(workdir))}",
        *stopping,
        "# Rendezvous on the first node, by the address Slurm reaches it at.",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'MASTER_ADDR=$(scontrol show node "$first" -o | sed -n "s/.*NodeAddr=\\([^ ]*\\).*/\\1/p")',
        f"export MASTER_ADDR MASTER_PORT={rdzv_port}",
        'echo "job $SLURM_JOB_ID: $SLURM_JOB_NUM_NODES node(s) ($SLURM_JOB_NODELIST), '
        'rendezvous at $MASTER_ADDR:$MASTER_PORT"',
        "# One torchrun per node.",
        *finish,
    ]
    return "\n".join(lines) + "\n"


def _options(
    job_name: str,
    nodes: int,
    output: Path,
    gpus_per_node: int,
    cpus_per_node: int | None,
    partition: str | None,
    account: str | None,
    qos: str | None,
    time_limit: str | None,
) -> list[str]:
    """The ``#SBATCH`` options of a job of one task per node."""
    options = [
        f"--job-name={job_name}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--output={output}",
        "--open-mode=append",
    ]
    if gpus_per_node:
        options.append(f"--gpus-per-node={gpus_per_node}")
    if cpus_per_node:
        options.append(f"--cpus-per-task={cpus_per_node}")
    for flag, value in (
        ("partition", partition),
        ("account", account),
        ("qos", qos),
        ("time", time_limit),
    ):
        if value:
            options.append(f"--{flag}={value}")
    return options


def step_script(
    command: Sequence[str],
    *,
    workdir: Path,
    output: Path,
    job_name: str,
    gpus_per_node: int = 0,
    cpus_per_node: int | None = None,
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    time_limit: str | None = None,
    sbatch_lines: Sequence[str] = (),
    setup: Sequence[str] = (),
) -> str:
    """The batch script of one step on one node (an evaluation, a shard's tagging): the
    ``#SBATCH`` options, the ``setup`` lines, then ``command`` as the job's one task."""
    options = _options(
        job_name, 1, output, gpus_per_node, cpus_per_node, partition, account, qos, time_limit
    )
    options += [line.removeprefix("#SBATCH").strip() for line in sbatch_lines]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in options),
        "# Written by the lab's stage command (olmo_assets/lab/slurm.py).",
        "set -euo pipefail",
        *setup,
        f"cd {shlex.quote(str(workdir))}",
        "srun --kill-on-bad-exit=1 " + " ".join(shlex.quote(part) for part in command),
    ]
    return "\n".join(lines) + "\n"


def submit(script: Path, env: Mapping[str, str] | None = None) -> str:
    """``sbatch --parsable SCRIPT``: the job id."""
    done = subprocess.run(
        ["sbatch", "--parsable", str(script)],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()} (is the "
            "cluster reachable from here: `sinfo`? are train.slurm's partition, account and "
            "qos valid on it?)"
        )
    return done.stdout.strip().split(";")[0]


def job_state(job_id: str, env: Mapping[str, str] | None = None) -> JobState | None:
    """The job's state from ``scontrol show job`` (None once the controller forgot it)."""
    done = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    fields = dict(_FIELD.findall(done.stdout))
    restarts = fields.get("Restarts", "0")
    return JobState(
        fields.get("JobState", "UNKNOWN"),
        fields.get("ExitCode", "?"),
        int(restarts) if restarts.isdigit() else 0,
    )


class _Tail:
    """Copies what is appended to a file to this process's stdout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def __call__(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        if data:
            self.offset += len(data)
            sys.stdout.write(data.decode("utf-8", errors="replace"))
            sys.stdout.flush()


def run_job(
    script: Path,
    output: Callable[[str], Path],
    *,
    env: Mapping[str, str] | None = None,
    poll: Callable[[], None] | None = None,
    poll_seconds: float = 2.0,
) -> str:
    """Submit ``script`` and follow the job to its end; its id. ``output(job_id)`` is the
    file its output goes to. A job that ends other than COMPLETED raises
    :class:`SlurmJobError`; an interruption cancels the job (``scancel``) and re-raises."""
    job_id = submit(script, env)
    print(f"submitted Slurm job {job_id} ({script})", flush=True)
    tail = _Tail(output(job_id))
    state: JobState | None = None
    restarts = 0
    try:
        while True:
            state = job_state(job_id, env)
            if state is not None and state.restarts > restarts:
                restarts = state.restarts
                print(f"Slurm job {job_id} was requeued (restart {restarts})", flush=True)
            tail()
            if poll is not None:
                best_effort(poll)
            if state is None or state.final:
                # A job requeued (by itself, or preempted with PreemptMode=REQUEUE) can show
                # its old run's end for a moment: look once more before taking it as final.
                time.sleep(poll_seconds)
                again = job_state(job_id, env)
                if again is None or (again.final and again.restarts == restarts):
                    break
                continue
            time.sleep(poll_seconds)
    except BaseException:
        with contextlib.suppress(OSError):
            subprocess.run(["scancel", job_id], env=dict(env) if env else None, check=False)
        print(f"cancelled Slurm job {job_id}", flush=True)
        raise
    tail()
    if state is None:
        raise SlurmJobError(job_id, "UNKNOWN (no longer known to the controller)", "?", tail.path)
    if state.state != "COMPLETED":
        raise SlurmJobError(job_id, state.state, state.exit_code, tail.path)
    return job_id
