"""Assemble a :class:`Trainer` with the standard callbacks and run it (``olmo train``)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from olmo_nn.train.callbacks.base import Callback
from olmo_nn.train.callbacks.console import ConsoleProgress
from olmo_nn.train.callbacks.metrics_file import MetricsFile
from olmo_nn.train.config import TrainConfig
from olmo_nn.train.trainer import Trainer

__all__ = ["default_callbacks", "run_training"]


def default_callbacks(config: TrainConfig) -> list[Callback]:
    """In-loop evaluation (first: it adds to the step's metrics), metrics.jsonl, the console
    line, the loss plot, MLflow."""
    callbacks: list[Callback] = []
    if config.eval.interval and config.data.validation_paths:
        from olmo_nn.train.callbacks.perplexity import PerplexityEval

        callbacks.append(PerplexityEval())
    if config.eval.interval and config.eval.downstream_tasks:
        from olmo_nn.train.callbacks.downstream import DownstreamEval

        callbacks.append(DownstreamEval())
    from olmo_nn.train.callbacks.loss_plot import LossPlot

    callbacks += [MetricsFile(), ConsoleProgress(), LossPlot()]
    if config.mlflow:
        from olmo_nn.train.callbacks.mlflow_logger import MLflowLogger

        callbacks.append(MLflowLogger())
    return callbacks


def run_training(config: TrainConfig, run_dir: Path, *, stop_at: int | None = None) -> Trainer:
    trainer = Trainer(config, run_dir, callbacks=default_callbacks(config), stop_at=stop_at)
    try:
        trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return trainer
