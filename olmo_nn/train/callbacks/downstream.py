"""In-loop downstream evaluation: a small, fixed subset of tasks through ``olmo eval``'s code.

Every ``eval.interval`` steps the model scores ``eval.downstream_limit`` examples of each task
in ``eval.downstream_tasks`` (sampled once, OLMo's seed 1234); ``downstream/<task>/acc`` and
the per-normalization accuracies join the step's metrics, so metrics.jsonl and the MLflow run
get them. Single-process runs only for now: under FSDP the hook is skipped with a warning.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from olmo_nn.train.callbacks.base import Callback

if TYPE_CHECKING:
    from olmo_nn.train.trainer import Trainer

__all__ = ["DownstreamEval"]


class DownstreamEval(Callback):
    def __init__(self) -> None:
        self._tasks: dict[str, tuple[list[Any], str]] | None = None
        self._tokenizer: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        config = trainer.config.eval
        if trainer.ctx.world_size > 1:
            warnings.warn(
                "in-loop downstream evaluation is skipped under FSDP (several processes)",
                stacklevel=2,
            )
            return
        from olmo_nn.eval.tasks import expand_task_names, get_task_spec, load_task
        from olmo_nn.tokenizer import Tokenizer

        self._tokenizer = Tokenizer.from_name_or_path()  # loaded once, not at every evaluation

        self._tasks = {
            name: (
                load_task(name, limit=config.downstream_limit),
                get_task_spec(name).default_normalization,
            )
            for name in expand_task_names(config.downstream_tasks)
        }

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        interval = trainer.config.eval.interval
        step = metrics["step"]
        if (
            not self._tasks
            or not interval
            or (step % interval and step != trainer.config.max_steps)
        ):
            return
        from olmo_nn.eval.downstream import evaluate_task
        from olmo_nn.eval.models import LanguageModel

        model = trainer.model
        wrapped = LanguageModel(
            model,
            self._tokenizer,
            name=trainer.config.run_name,
            max_length=trainer.config.model.max_sequence_length,
            vocab_size=trainer.config.model.padded_vocab_size,
        )
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for name, (instances, default) in self._tasks.items():
                result = evaluate_task(wrapped, name, instances, default_normalization=default)
                metrics[f"downstream/{name}/acc"] = result.accuracy[default]
                for kind, value in result.accuracy.items():
                    metrics[f"downstream/{name}/acc_{kind}"] = value
        model.train(was_training)
