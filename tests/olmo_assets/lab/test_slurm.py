"""Training as a Slurm job: the batch script the lab writes, and a two-node run on a real local
cluster that trains exactly as one process does."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from olmo_assets.lab.params import Lab, SlurmParams
from olmo_assets.lab.pipeline import parse_run
from olmo_assets.lab.slurm import JobState, SlurmJobError, job_state, run_job, sbatch_script
from olmo_assets.lab.steps.results import InputError
from olmo_assets.lab.steps.training import train
from olmo_nn.train.callbacks.metrics_file import read_metrics
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

OLMO_7B_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=olmo-train
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --output=/shared/lab/slurm/train-%j.out
#SBATCH --open-mode=append
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --partition=gpu
#SBATCH --account=ai2
#SBATCH --qos=high
#SBATCH --time=2-00:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --exclusive
# Written by the lab's train step (olmo_assets/lab/slurm.py).
set -euo pipefail
module load cuda/12.4
source /shared/lab/.venv/bin/activate
cd /shared/lab
# Warned (USR1) of the time limit, ask the trainer to save and stop.
stop_request=/shared/lab/lab/runs/train/stop-request
rm -f "$stop_request" /shared/lab/lab/runs/train/stopped.json
trap 'echo "job $SLURM_JOB_ID: warned (USR1): asking the trainer to save a checkpoint and stop"; \
touch "$stop_request"' USR1
# Rendezvous on the first node, by the address Slurm reaches it at.
first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$first" -o | sed -n "s/.*NodeAddr=\\([^ ]*\\).*/\\1/p")
export MASTER_ADDR MASTER_PORT=29500
echo "job $SLURM_JOB_ID: $SLURM_JOB_NUM_NODES node(s) ($SLURM_JOB_NODELIST), rendezvous at \
$MASTER_ADDR:$MASTER_PORT"
# One torchrun per node.
srun --kill-on-bad-exit=1 python -m torch.distributed.run --nnodes=$SLURM_JOB_NUM_NODES \
--nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" \
--rdzv-id="$SLURM_JOB_ID" -m olmo_nn.cli.main train /shared/lab/configs/olmo-7b.yaml \
'data.paths=[/shared/lab/lab/shards/web/00000/train]' --run-dir /shared/lab/lab/runs/train &
launch=$!
while :; do
  status=0; wait "$launch" || status=$?
  kill -0 "$launch" 2>/dev/null || break  # else the warning interrupted the wait
done
# The trainer saved and stopped: requeue the job, which resumes from there.
if [ -f /shared/lab/lab/runs/train/stopped.json ]; then
  echo "job $SLURM_JOB_ID: the trainer saved and stopped; requeueing the job"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$status"
"""


def test_the_batch_script_of_an_olmo_7b_run_on_4_nodes_of_8_gpus() -> None:
    script = sbatch_script(
        command=[
            "-m",
            "olmo_nn.cli.main",
            "train",
            "/shared/lab/configs/olmo-7b.yaml",
            "data.paths=[/shared/lab/lab/shards/web/00000/train]",
            "--run-dir",
            "/shared/lab/lab/runs/train",
        ],
        torchrun=["python", "-m", "torch.distributed.run"],
        processes_per_node=8,
        workdir=Path("/shared/lab"),
        output=Path("/shared/lab/slurm/train-%j.out"),
        slurm=SlurmParams(
            nodes=4,
            gpus_per_node=8,
            cpus_per_node=64,
            partition="gpu",
            account="ai2",
            qos="high",
            time="2-00:00:00",
            sbatch=["#SBATCH --exclusive"],
            setup=["module load cuda/12.4", "source /shared/lab/.venv/bin/activate"],
            signal_seconds=300,
        ),
        run_dir=Path("/shared/lab/lab/runs/train"),
    )
    assert script == OLMO_7B_SCRIPT.replace("\\\n", "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _slurm_lab(
    built_lab: Lab,
    tmp_path: Path,
    overrides: dict[str, Any] | None = None,
    nodes: int = 1,
    time_limit: str | None = None,
    **train: Any,
) -> Lab:
    """The session's lab at ``tmp_path/repo`` (its configs and token shards), training as a
    Slurm job of ``nodes``; ``train`` and ``overrides`` change its ``train`` section."""
    repo = tmp_path / "repo"
    shutil.copytree(built_lab.repo / "configs", repo / "configs")
    shutil.copytree(built_lab.shards, repo / "lab" / "shards")
    params = yaml.safe_load((built_lab.repo / "params.yaml").read_text(encoding="utf-8"))
    slurm = {
        "nodes": nodes,
        "rdzv_port": _free_port(),
        **({"time": time_limit} if time_limit else {}),
    }
    params["train"] |= {
        **train,
        "overrides": params["train"]["overrides"] | (overrides or {}),
        "launcher": "slurm",
        "slurm": slurm,
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    # The copied shards' folders are named by path in the run: the lab's own, here.
    return Lab.load(repo)


def _on_cluster(cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Clients reach the local cluster; MLflow logs to a store of the test's own."""
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_two_node_slurm_job_trains_as_one_process_does(
    built_lab: Lab,
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The session's lab trained its four steps in one local process; the same run as a
    Slurm job of two nodes (one torchrun each, gloo) logs the same losses."""
    # Two ranks of two instances each: a micro-batch of two, and a validation batch for each
    # rank (the training math is the same).
    overrides = {"eval.max_batches": 2}
    lab = _slurm_lab(
        built_lab, tmp_path, micro_batch_size=2, overrides=overrides, nodes=2, time_limit="00:10:00"
    )
    _on_cluster(slurm_cluster, monkeypatch, tmp_path)

    result = train(lab)

    out = capsys.readouterr().out
    assert "submitted Slurm job" in out
    assert "2 node(s) (n[1-2])" in out
    (script,) = sorted((lab.repo / "lab" / "slurm").glob("train-*.sbatch"))
    assert "#SBATCH --nodes=2" in script.read_text(encoding="utf-8")
    one = {m["step"]: m["loss"] for m in read_metrics(built_lab.run_dir) if "loss" in m}
    two = {m["step"]: m["loss"] for m in read_metrics(lab.run_dir) if "loss" in m}
    assert sorted(two) == sorted(one) == [1, 2, 3, 4]
    assert all(abs(two[step] - one[step]) < 1e-4 for step in one), (one, two)
    # Two ranks wrote the sharded checkpoint (one file each); one process writes one.
    ranks = sorted(p.name for p in (lab.run_dir / "checkpoints" / "step000004").glob("*.distcp"))
    assert ranks == ["__0_0.distcp", "__1_0.distcp"]
    single = built_lab.run_dir / "checkpoints" / "step000004"
    assert sorted(p.name for p in single.glob("*.distcp")) == ["__0_0.distcp"]
    assert result.metadata["steps"] == 4


def test_a_job_warned_of_its_time_limit_saves_requeues_and_resumes_bit_exactly(
    built_lab: Lab,
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The warning Slurm sends before the time limit (``--signal=B:USR1@N``), sent now with
    ``scancel --batch --signal=USR1``: the trainer saves and stops, the job requeues itself
    and resumes, and the run ends with the losses of the session's uninterrupted run."""
    lab = _slurm_lab(built_lab, tmp_path)
    repo = lab.repo
    env = {**os.environ, **slurm_cluster.env}
    _on_cluster(slurm_cluster, monkeypatch, tmp_path)
    warned: list[str] = []

    def warn_once_started() -> None:
        # The batch script announces the rendezvous once its USR1 trap is set.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for output in (repo / "lab" / "slurm").glob("train-*.out"):
                if "rendezvous at" in output.read_text(encoding="utf-8", errors="replace"):
                    job = output.stem.removeprefix("train-")
                    subprocess.run(
                        ["scancel", "--batch", "--signal=USR1", job], env=env, check=True
                    )
                    warned.append(job)
                    return
            time.sleep(0.2)

    warner = threading.Thread(target=warn_once_started)
    warner.start()
    try:
        result = train(lab)
    finally:
        warner.join()

    out = capsys.readouterr().out
    assert warned, out
    assert "#SBATCH --signal=B:USR1@300" in next(
        (repo / "lab" / "slurm").glob("train-*.sbatch")
    ).read_text(encoding="utf-8")
    assert "warned (USR1): asking the trainer to save a checkpoint and stop" in out
    assert "the trainer saved and stopped; requeueing the job" in out
    assert f"Slurm job {warned[0]} was requeued (restart 1)" in out
    assert "resumed from " in out
    one = [(m["step"], m["loss"]) for m in read_metrics(built_lab.run_dir) if "loss" in m]
    resumed = [(m["step"], m["loss"]) for m in read_metrics(lab.run_dir) if "loss" in m]
    assert resumed == one  # exactly: the same run, stopped and resumed
    assert not (lab.run_dir / "stopped.json").exists()
    assert result.metadata["steps"] == 4


def test_evaluations_and_shard_tokenization_run_as_slurm_jobs_with_the_local_results(
    built_lab: Lab,
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``eval.launcher`` and ``curation.launcher: slurm``: each run of those stages is a job
    of its own, whose outputs equal the session's local run byte for byte, and whose step
    metadata and check verdicts come back to the stage command."""
    repo = tmp_path / "repo"
    shutil.copytree(built_lab.repo, repo, ignore=shutil.ignore_patterns(".locks"))
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["eval"] |= {"launcher": "slurm"}
    params["curation"] |= {"launcher": "slurm", "slurm": {"time": "00:10:00"}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    lab = Lab.load(repo)
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    for folder in (lab.downstream(4, "arc_easy"), lab.token_shards("code", "00000")):
        shutil.rmtree(folder)

    result, checks = parse_run(lab, "downstream", ["4", "arc_easy"]).execute(lab)
    out = capsys.readouterr().out
    assert "submitted Slurm job" in out and "downstream@4-arc_easy on " in out
    assert result.metadata["slurm_node"] in ("n1", "n2")
    assert result.metadata["accuracy"].endswith("(chance 0.25, 8 examples)")
    assert [(a.name, c.name, o.passed) for a, c, o in checks] == [
        ("downstream_eval", "rows_complete", True)
    ]
    expected = built_lab.downstream(4, "arc_easy")
    for path in expected.iterdir():
        assert (lab.downstream(4, "arc_easy") / path.name).read_bytes() == path.read_bytes()

    # The same shard tokenized here first (the copy's own paths are in its manifest).
    shard = lab.token_shards("code", "00000")
    tokenize = parse_run(lab, "tokenize", ["code", "00000"])
    tokenize.execute_here(lab)
    here = {p.relative_to(shard): _content(p) for p in shard.rglob("*") if p.is_file()}
    shutil.rmtree(shard)
    _, checks = tokenize.execute(lab)
    assert all(outcome.passed for _, _, outcome in checks)
    (script,) = (repo / "lab" / "slurm").glob("tokenize-code-00000-*.sbatch")
    assert "#SBATCH --time=00:10:00" in script.read_text(encoding="utf-8")
    assert {p.relative_to(shard): _content(p) for p in shard.rglob("*") if p.is_file()} == here
    assert len(here) == 6

    # A user's mistake on the node comes back as one: a message, not a traceback.
    shutil.rmtree(lab.run_dir / "checkpoints" / "step000002-unsharded")
    with pytest.raises(InputError) as raised:
        parse_run(lab, "downstream", ["2", "arc_easy"]).execute(lab)
    assert "step000002-unsharded" in str(raised.value)
    assert "(Slurm job " in str(raised.value)


def _content(path: Path) -> bytes:
    """A file's bytes (a gzip file's uncompressed: its header holds the time it was written)."""
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _script(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.sbatch"
    path.write_text(
        f"#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --output={folder}/job-%j.out\n{body}\n",
        encoding="utf-8",
    )
    return path


def test_a_failed_job_is_an_error_naming_its_state_and_exit_code(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = _script(tmp_path, "srun bash -c 'echo on $SLURMD_NODENAME'\nexit 3")
    with pytest.raises(SlurmJobError) as raised:
        run_job(
            script,
            lambda job: tmp_path / f"job-{job}.out",
            env={**os.environ, **slurm_cluster.env},
            poll_seconds=0.5,
        )
    error = raised.value
    assert (error.state, error.exit_code) == ("FAILED", "3:0")
    assert str(error) == (
        f"Slurm job {error.job_id} ended FAILED (exit code 3:0); its output: "
        f"{tmp_path / f'job-{error.job_id}.out'}"
    )
    # Its output was followed: a line from each node.
    out = capsys.readouterr().out
    assert "on n1" in out and "on n2" in out


def test_interrupting_the_step_cancels_its_job_and_leaves_nothing_running(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    marker = f"olmo-cancel-{os.getpid()}"
    script = _script(tmp_path, f"srun bash -c 'exec -a {marker} sleep 300'")
    follower = (
        "import sys; from pathlib import Path; from olmo_assets.lab.slurm import run_job\n"
        "from olmo_assets.lab.processes import children_stop_with_this_process\n"
        "with children_stop_with_this_process():\n"
        f"    run_job(Path({str(script)!r}), lambda j: Path({str(tmp_path)!r}) / f'job-{{j}}.out',"
        " poll_seconds=0.5)\n"
    )
    env = {**os.environ, **slurm_cluster.env}
    process = subprocess.Popen(
        [sys.executable, "-c", follower], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    job_id = process.stdout.readline().split()[3]  # "submitted Slurm job <id> (...)"
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the job's tasks never started"
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=60)[0]
    assert process.returncode != 0
    assert f"cancelled Slurm job {job_id}" in rest
    deadline = time.monotonic() + 30
    while True:
        queue = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
        ).stdout.strip()
        running = subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0
        if not queue and not running:
            break
        assert time.monotonic() < deadline, (queue, running)
        time.sleep(0.5)
    assert job_state(job_id, env) in (
        None,
        JobState("CANCELLED", "0:15"),
        JobState("CANCELLED", "0:0"),
    )
