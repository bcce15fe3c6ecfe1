"""The local two-node Slurm cluster (tests/slurm_cluster.py) runs steps and batch jobs."""

from __future__ import annotations

import os
import re
import subprocess
import time

from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

_JOB_TIMEOUT_S = 30.0
_PRINT_NODE = "echo $SLURMD_NODENAME"


def _slurm(cluster: SlurmCluster, *args: str) -> str:
    done = subprocess.run(
        list(args),
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=_JOB_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{args} exited with {done.returncode}:\n{done.stderr}"
    return done.stdout


def _ranked_nodes(output: str) -> list[str]:
    """``srun -l`` output ("0: n1") as node names in rank order."""
    ranked = sorted(line.split(": ", 1) for line in output.strip().splitlines())
    return [node.strip() for _, node in ranked]


def test_srun_runs_a_task_on_each_node(slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    output = _slurm(slurm_cluster, "srun", "-N2", "-l", "bash", "-c", _PRINT_NODE)
    assert _ranked_nodes(output) == slurm_cluster.nodes


def test_a_two_node_batch_job_completes(slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    out = slurm_cluster.root / "batch-%j.out"
    job = _slurm(
        slurm_cluster,
        "sbatch",
        "--parsable",
        "-N2",
        f"--partition={slurm_cluster.partition}",
        f"--chdir={slurm_cluster.root}",
        f"--output={out}",
        "--wrap",
        f"srun -l bash -c '{_PRINT_NODE}'",
    ).strip()
    assert job.isdigit(), job

    deadline = time.monotonic() + _JOB_TIMEOUT_S
    state = shown = ""
    while time.monotonic() < deadline:
        shown = _slurm(slurm_cluster, "scontrol", "show", "job", "-o", job)
        match = re.search(r"\bJobState=(\S+)", shown)
        assert match is not None, shown
        state = match.group(1)
        if state not in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}:
            break
        time.sleep(0.2)
    assert state == "COMPLETED", shown

    written = (slurm_cluster.root / f"batch-{job}.out").read_text()
    assert _ranked_nodes(written) == slurm_cluster.nodes
