"""The training step: ``olmo train`` under ``torchrun`` on the token shards; its check.

While the trainer runs, this process follows its ``metrics.jsonl`` and reports progress (step,
loss, tokens per second) every ``max_steps // 20`` steps to whoever launched the step. The
metadata gives the final loss smoothed over the last tenth of the run (one step's loss is
noisy); the first and last raw losses are kept as text.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from olmo_assets.lab.params import Lab
from olmo_assets.lab.processes import run_command
from olmo_assets.lab.steps.results import CheckResult, InputError, StepResult

__all__ = [
    "TORCHRUN",
    "TrainingProgress",
    "launch_identity",
    "losses_finite",
    "slurm_script",
    "train",
    "train_command",
    "trainer_arguments",
    "trainer_overrides",
]

PROGRESS_REPORTS = 20
"""About how many progress lines a training run reports."""


#: How ``torchrun`` is started: by this interpreter, so the lab's environment runs it.
TORCHRUN = (sys.executable, "-m", "torch.distributed.run")


def trainer_arguments(lab: Lab) -> list[str]:
    """What ``torchrun`` runs: ``-m olmo_nn.cli.main train CONFIG overrides --run-dir RUN``."""
    return [
        "-m",
        "olmo_nn.cli.main",
        "train",
        str(lab.repo / lab.params.train.config),
        *trainer_overrides(lab),
        "--run-dir",
        str(lab.run_dir),
    ]


def trainer_overrides(lab: Lab) -> list[str]:
    """The ``key=value`` overrides of the training config: the shards, the ``train`` section."""
    from olmo_assets.lab.steps.tokenization import split_folders

    params = lab.params.train
    train = split_folders(lab, "train")
    if not train:
        raise InputError(
            f"no source shard in {lab.shards} holds kept documents: nothing to train on (the "
            "mix removed every document; see curated_corpus's counts)"
        )
    overrides = [
        f"data.paths=[{','.join(str(folder) for folder in train)}]",
        f"max_steps={params.max_steps}",
        f"global_batch_size={params.global_batch_size}",
        f"micro_batch_size={params.micro_batch_size}",
        f"save_interval_unsharded={params.checkpoint_interval}",
        f"save_interval={params.checkpoint_interval}",
        f"eval.interval={params.checkpoint_interval}",
        f"mlflow_experiment={lab.mlflow_experiment}",
        *(f"{key}={value}" for key, value in sorted(params.overrides.items())),
    ]
    validation = split_folders(lab, "validation")
    if validation:
        overrides.append(
            f"data.validation_paths=[{','.join(str(folder) for folder in validation)}]"
        )
    return overrides


def train_command(lab: Lab) -> list[str]:
    """Here: ``torchrun --standalone --nproc-per-node=train.nproc`` and the trainer."""
    nproc = lab.params.train.nproc
    return [*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", *trainer_arguments(lab)]


def slurm_script(lab: Lab) -> str:
    """On a Slurm cluster: the batch script of ``train.slurm`` (one ``torchrun`` per node)."""
    from olmo_assets.lab.slurm import sbatch_script

    params = lab.params.train
    return sbatch_script(
        command=trainer_arguments(lab),
        torchrun=TORCHRUN,
        processes_per_node=params.nproc,
        workdir=lab.repo,
        output=lab.repo / params.slurm.folder / "train-%j.out",
        slurm=params.slurm,
        run_dir=lab.run_dir,
    )


def _run_on_slurm(lab: Lab, environment: dict[str, str], progress: TrainingProgress) -> None:
    """Submit the batch script (kept beside the job's output) and follow the job."""
    from olmo_assets.lab.slurm import run_job

    folder = lab.repo / lab.params.train.slurm.folder
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / f"train-{time.strftime('%Y%m%dT%H%M%S')}.sbatch"
    script.write_text(slurm_script(lab), encoding="utf-8")
    run_job(script, lambda job: folder / f"train-{job}.out", env=environment, poll=progress)


def launch_identity(lab: Lab) -> str:
    """What a run must share with an earlier one to resume it: the resolved training config
    without the fields that leave its math alone (the trainer's own rule,
    :func:`olmo_nn.train.config.math_of`: not the node or process count, the micro-batch
    size, activation checkpointing, …), the shards' manifests, and the stage's code, so an
    edited config or trainer starts afresh instead of resuming, and a run moved to other
    hardware resumes."""
    from olmo_assets.lab.hashing import dvc_md5
    from olmo_assets.lab.pipeline import code_path, stage_named
    from olmo_assets.lab.steps.tokenization import split_folders
    from olmo_nn.train.config import TrainConfig, math_of

    config = TrainConfig.load(lab.repo / lab.params.train.config)
    resolved = config.with_overrides(trainer_overrides(lab)).resolved()
    manifests = [folder / "manifest.json" for folder in split_folders(lab, "train")]
    return json.dumps(
        {
            "config": math_of(resolved.to_dict()),
            "shards": [path.read_text(encoding="utf-8") for path in manifests],
            "code": {
                path: dvc_md5(code_path(lab, path)) for path in stage_named("train").code_paths
            },
        },
        sort_keys=True,
    )


class TrainingProgress:
    """Follows a growing ``metrics.jsonl`` and reports every ``every`` steps (and the last).

    Call it repeatedly (``run_command``'s ``poll``): each call reads the lines written since the
    last one. A file that shrank (a resume truncates it to its checkpoint) is read again from
    the start; a step is reported once.
    """

    def __init__(self, path: Path, max_steps: int, every: int | None = None) -> None:
        self.path = path
        self.max_steps = max_steps
        self.every = every or max(1, max_steps // PROGRESS_REPORTS)
        self._offset = 0
        self._partial = b""
        self._last_reported = 0

    def __call__(self) -> None:
        from olmo_assets.lab.progress import report

        if not self.path.is_file():
            return
        if self.path.stat().st_size < self._offset:
            self._offset, self._partial = 0, b""
        with self.path.open("rb") as metrics:
            metrics.seek(self._offset)
            data = self._partial + metrics.read()
            self._offset = metrics.tell()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a crash: read_metrics says so at the end
            step = int(record.get("step", 0))
            if step > self._last_reported and (step % self.every == 0 or step == self.max_steps):
                self._last_reported = step
                report(self.describe(record))

    def describe(self, record: dict[str, Any]) -> str:
        """``step 15/300 (5%)  loss 9.8123  1,834 tokens/s`` (plus the validation loss)."""
        step = int(record["step"])
        parts = [f"step {step}/{self.max_steps} ({100 * step / self.max_steps:.0f}%)"]
        if "loss" in record:
            parts.append(f"loss {float(record['loss']):.4f}")
        if "eval/loss" in record:
            parts.append(f"validation loss {float(record['eval/loss']):.4f}")
        if isinstance(record.get("tokens_per_s"), int | float):
            parts.append(f"{record['tokens_per_s']:,.0f} tokens/s")
        return "  ".join(parts)


def train(lab: Lab) -> StepResult:
    """Train under ``torchrun`` (``train.nproc`` ranks); an interrupted run resumes."""
    from olmo_assets.lab.report import plot_loss, smoothed_final_loss
    from olmo_assets.lab.tracking import experiment_id, log_training_inputs, training_run_tags
    from olmo_nn.train.callbacks.metrics_file import METRICS_FILE, read_metrics
    from olmo_nn.train.callbacks.mlflow_logger import RUN_TAGS_ENV
    from olmo_nn.train.stop import STOP_REQUEST_FILE, STOPPED_FILE

    # The run resumes from its checkpoints when it was launched the same way (an interrupted
    # run); anything else starts it afresh.
    identity = lab.run_dir / "launch.json"
    launch = launch_identity(lab)
    if lab.run_dir.exists() and (
        not identity.is_file() or identity.read_text(encoding="utf-8") != launch
    ):
        shutil.rmtree(lab.run_dir)
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    identity.write_text(launch, encoding="utf-8")
    # A stop request left by an earlier launch (a warned job cancelled before its trainer
    # saw it) would stop this one after its first step.
    for leftover in (STOP_REQUEST_FILE, STOPPED_FILE):
        (lab.run_dir / leftover).unlink(missing_ok=True)
    # The experiment (and a new SQLite store's schema) is created by this one process before
    # the trainer and the evaluation steps write to it.
    experiment_id(lab)
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": lab.mlflow_uri,
        # The trainer's run carries its kind, the code's commit and its Dagster page.
        RUN_TAGS_ENV: json.dumps(training_run_tags()),
    }
    progress = TrainingProgress(lab.run_dir / METRICS_FILE, lab.params.train.max_steps)
    if lab.params.train.launcher == "slurm":
        _run_on_slurm(lab, environment, progress)
    else:
        run_command(train_command(lab), environment, poll=progress)
    run_id = log_training_inputs(lab)
    records = read_metrics(lab.run_dir)
    losses = {int(m["step"]): float(m["loss"]) for m in records if "loss" in m}
    checkpoints = sorted(p.name for p in (lab.run_dir / "checkpoints").glob("*-unsharded"))
    metadata: dict[str, Any] = {"steps": len(losses)}
    if losses:
        smoothed, window = smoothed_final_loss(losses)
        first, last = min(losses), max(losses)
        metadata |= {
            "final_loss_smoothed": smoothed,
            "final_loss_window": f"mean of the train loss over {window}",
            "raw_first_loss": f"{losses[first]:.4f} at step {first}",
            "raw_last_loss": f"{losses[last]:.4f} at step {last} (one step: noisy)",
        }
    metadata |= {"checkpoints": ", ".join(checkpoints), "mlflow_run_id": run_id or ""}
    # The trainer's loss.png (raw, redrawn at each checkpoint while it runs), redrawn as the
    # model report draws it: the raw loss faint, its trailing mean, the validation loss.
    loss_plot = lab.run_dir / "loss.png"
    eval_losses = {int(m["step"]): float(m["eval/loss"]) for m in records if "eval/loss" in m}
    if losses:
        plot_loss(losses, eval_losses, loss_plot)
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
