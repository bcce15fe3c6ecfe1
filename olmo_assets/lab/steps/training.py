"""The training step: ``olmo train`` under ``torchrun`` on the token shards; its check."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from typing import Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.processes import run_command
from olmo_assets.lab.steps.results import CheckResult, StepResult

__all__ = ["launch_identity", "losses_finite", "train", "train_command"]


def train_command(lab: Lab) -> list[str]:
    """``torchrun --nproc-per-node=train.nproc -m olmo_nn.cli.main train CONFIG overrides``."""
    params = lab.params.train
    overrides = [
        f"data.paths=[{lab.shards / 'train'}]",
        f"max_steps={params.max_steps}",
        f"global_batch_size={params.global_batch_size}",
        f"micro_batch_size={params.micro_batch_size}",
        f"save_interval_unsharded={params.checkpoint_interval}",
        f"save_interval={params.checkpoint_interval}",
        f"eval.interval={params.checkpoint_interval}",
        f"mlflow_experiment={lab.mlflow_experiment}",
        *(f"{key}={value}" for key, value in sorted(params.overrides.items())),
    ]
    if (lab.shards / "validation").is_dir():
        overrides.append(f"data.validation_paths=[{lab.shards / 'validation'}]")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={params.nproc}",
        "-m",
        "olmo_nn.cli.main",
        "train",
        str(lab.repo / params.config),
        *overrides,
        "--run-dir",
        str(lab.run_dir),
    ]


def launch_identity(lab: Lab, command: list[str]) -> str:
    """What a run must share with an earlier one to resume it: the command, the shards'
    manifest, and the stage's code version (its parameters, the training config's content
    and the code), so an edited config or trainer starts afresh instead of resuming."""
    from olmo_assets.lab.pipeline import StageRun, code_version, stage_named

    manifest = lab.shards / "train" / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest.parent} holds no token shards: materialize them first")
    return json.dumps(
        {
            "command": command[1:],
            "shards": manifest.read_text(encoding="utf-8"),
            "code_version": code_version(lab, StageRun(stage_named("train"))),
        }
    )


def train(lab: Lab) -> StepResult:
    """Train under ``torchrun`` (``train.nproc`` ranks); an interrupted run resumes."""
    from olmo_assets.lab.tracking import experiment_id
    from olmo_nn.train.callbacks.metrics_file import read_metrics

    command = train_command(lab)
    # The run resumes from its checkpoints when it was launched the same way (an interrupted
    # run); anything else starts it afresh.
    identity = lab.run_dir / "launch.json"
    launch = launch_identity(lab, command)
    if lab.run_dir.exists() and (
        not identity.is_file() or identity.read_text(encoding="utf-8") != launch
    ):
        shutil.rmtree(lab.run_dir)
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    identity.write_text(launch, encoding="utf-8")
    # The experiment (and a new SQLite store's schema) is created by this one process before
    # the trainer and the evaluation steps write to it.
    experiment_id(lab)
    run_command(command, {**os.environ, "MLFLOW_TRACKING_URI": lab.mlflow_uri})
    losses = [m["loss"] for m in read_metrics(lab.run_dir) if "loss" in m]
    checkpoints = sorted(p.name for p in (lab.run_dir / "checkpoints").glob("*-unsharded"))
    run_id = lab.run_dir / "mlflow_run_id"
    metadata: dict[str, Any] = {
        "steps": len(losses),
        "first_loss": losses[0] if losses else math.nan,
        "last_loss": losses[-1] if losses else math.nan,
        "checkpoints": ", ".join(checkpoints),
        "mlflow_run_id": run_id.read_text().strip() if run_id.is_file() else "",
    }
    loss_plot = lab.run_dir / "loss.png"
    return StepResult(metadata, images={"loss": loss_plot} if loss_plot.is_file() else {})


def losses_finite(lab: Lab) -> CheckResult:
    """``metrics.jsonl`` holds a finite loss for every step up to ``train.max_steps``."""
    from olmo_nn.train.callbacks.metrics_file import read_metrics

    records = read_metrics(lab.run_dir)
    losses = {int(m["step"]): float(m["loss"]) for m in records if "loss" in m}
    bad = sorted(step for step, loss in losses.items() if not math.isfinite(loss))
    missing = sorted(set(range(1, lab.params.train.max_steps + 1)) - set(losses))
    return CheckResult(
        not bad and not missing,
        {
            "steps": len(losses),
            "non_finite_at": ", ".join(map(str, bad[:10])) or "none",
            "missing_steps": len(missing),
        },
    )
