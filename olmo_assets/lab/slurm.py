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

from olmo_assets.lab.params import SlurmJobParams, SlurmParams
from olmo_assets.lab.processes import best_effort
from olmo_assets.lab.steps.results import InputError

__all__ = [
    "FINAL_STATES",
    "JobState",
    "SlurmJobError",
    "SlurmUnreachable",
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
    processes_per_node: int,
    workdir: Path,
    output: Path,
    slurm: SlurmParams,
    run_dir: Path | None = None,
    job_name: str = "olmo-train",
) -> str:
    """The batch script: ``#SBATCH`` options (``slurm``: nodes, GPUs, partition, …), the
    environment's ``setup`` lines, then one ``torchrun`` per node (``torchrun`` is how to start
    it, e.g. ``python -m torch.distributed.run``; ``command`` what it runs, e.g. ``-m
    olmo_nn.cli.main train …``). ``output`` takes the job's stdout and stderr (``%j`` is the
    job id).

    With the trainer's ``run_dir``, the job stops and resumes on a warning: Slurm sends this
    script ``USR1`` ``slurm.signal_seconds`` before the time limit (``--signal=B:USR1@N``;
    also ``scancel --batch --signal=USR1``), the script asks the trainer to save and stop
    (:mod:`olmo_nn.train.stop`), and once the trainer has, requeues the job, which resumes
    from that checkpoint."""
    from olmo_nn.train.stop import STOP_REQUEST_FILE, STOPPED_FILE

    options = _options(job_name, slurm.nodes, output, slurm)
    if run_dir is not None:
        if slurm.signal_seconds:
            options.append(f"--signal=B:USR1@{slurm.signal_seconds}")
        options.append("--requeue")
    options += [line.removeprefix("#SBATCH").strip() for line in slurm.sbatch]
    launch = [
        *(shlex.quote(part) for part in torchrun),
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
        stopped = shlex.quote(str(run_dir / STOPPED_FILE))
        stopping = [
            "# Warned (USR1) of the time limit, ask the trainer to save and stop.",
            f"stop_request={shlex.quote(str(run_dir / STOP_REQUEST_FILE))}",
            f'rm -f "$stop_request" {stopped}',
            "trap 'echo \"job $SLURM_JOB_ID: warned (USR1): asking the trainer to save a "
            'checkpoint and stop"; touch "$stop_request"\' USR1',
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
        *slurm.setup,
        f"cd {shlex.quote(str(workdir))}",
        *stopping,
        "# Rendezvous on the first node, by the address Slurm reaches it at.",
        'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'MASTER_ADDR=$(scontrol show node "$first" -o | sed -n "s/.*NodeAddr=\\([^ ]*\\).*/\\1/p")',
        f"export MASTER_ADDR MASTER_PORT={slurm.rdzv_port}",
        'echo "job $SLURM_JOB_ID: $SLURM_JOB_NUM_NODES node(s) ($SLURM_JOB_NODELIST), '
        'rendezvous at $MASTER_ADDR:$MASTER_PORT"',
        "# One torchrun per node.",
        *finish,
    ]
    return "\n".join(lines) + "\n"


def _options(job_name: str, nodes: int, output: Path, slurm: SlurmJobParams) -> list[str]:
    """The ``#SBATCH`` options of a job of one task per node."""
    if any(c.isspace() for c in str(output)):
        raise InputError(
            f"{output}: Slurm's #SBATCH --output cannot name a path with spaces; move the "
            "repository, or set slurm.folder to a folder without spaces"
        )
    options = [
        f"--job-name={job_name}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--output={output}",
        "--open-mode=append",
    ]
    if slurm.gpus_per_node:
        options.append(f"--gpus-per-node={slurm.gpus_per_node}")
    if slurm.cpus_per_node:
        options.append(f"--cpus-per-task={slurm.cpus_per_node}")
    for flag, value in (
        ("partition", slurm.partition),
        ("account", slurm.account),
        ("qos", slurm.qos),
        ("time", slurm.time),
    ):
        if value:
            options.append(f"--{flag}={value}")
    return options


def step_script(
    command: Sequence[str], *, workdir: Path, output: Path, job_name: str, slurm: SlurmJobParams
) -> str:
    """The batch script of one step on one node (an evaluation, a shard's tagging): the
    ``#SBATCH`` options, the ``setup`` lines, then ``command`` as the job's one task."""
    options = _options(job_name, 1, output, slurm)
    options += [line.removeprefix("#SBATCH").strip() for line in slurm.sbatch]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in options),
        "# Written by the lab's stage command (olmo_assets/lab/slurm.py).",
        "set -euo pipefail",
        *slurm.setup,
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
            "cluster reachable from here: `sinfo`? are the partition, account and qos of the "
            "step's slurm settings (train.slurm, eval.slurm, curation.slurm) valid on it?)"
        )
    return done.stdout.strip().split(";")[0]


class SlurmUnreachable(OSError):
    """``scontrol`` could not answer (the controller is down, restarting or too busy)."""


def job_state(job_id: str, env: Mapping[str, str] | None = None) -> JobState | None:
    """The job's state from ``scontrol show job``: None once the controller forgot it;
    :class:`SlurmUnreachable` when it cannot say."""
    try:
        done = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise SlurmUnreachable(f"`scontrol show job {job_id}` did not answer in 60 s") from None
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        raise SlurmUnreachable(f"`scontrol show job {job_id}`: {done.stderr.strip()}")
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


UNREACHABLE_PATIENCE_S = 600.0
"""How long a followed job's controller may stay silent before the step gives up (and cancels
the job)."""


def _state(
    job_id: str, env: Mapping[str, str] | None, silent_since: list[float]
) -> JobState | None:
    """:func:`job_state`, waiting out a controller that cannot answer for a while."""
    while True:
        try:
            state = job_state(job_id, env)
        except SlurmUnreachable as error:
            if not silent_since:
                silent_since.append(time.monotonic())
                print(f"{error}; asking again", flush=True)
            elif time.monotonic() - silent_since[0] > UNREACHABLE_PATIENCE_S:
                raise
            time.sleep(5)
            continue
        silent_since.clear()
        return state


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
    :class:`SlurmJobError`. An interruption, or a controller silent for
    :data:`UNREACHABLE_PATIENCE_S`, cancels the job (``scancel``) and re-raises."""
    job_id = submit(script, env)
    print(f"submitted Slurm job {job_id} ({script})", flush=True)
    tail = _Tail(output(job_id))
    state: JobState | None = None
    restarts = 0
    silent_since: list[float] = []
    try:
        while True:
            state = _state(job_id, env, silent_since)
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
                state = _state(job_id, env, silent_since)
                if state is None or (state.final and state.restarts == restarts):
                    break
                continue
            time.sleep(poll_seconds)
    except BaseException:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["scancel", job_id], env=dict(env) if env else None, check=False, timeout=60
            )
        print(f"cancelled Slurm job {job_id}", flush=True)
        raise
    tail()
    if state is None:
        raise SlurmJobError(job_id, "UNKNOWN (no longer known to the controller)", "?", tail.path)
    if state.state != "COMPLETED":
        raise SlurmJobError(job_id, state.state, state.exit_code, tail.path)
    return job_id
