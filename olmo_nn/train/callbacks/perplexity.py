"""In-loop evaluation: held-out loss and perplexity on ``data.validation_paths``.

A fixed subset (the first ``eval.max_batches x batch_size`` validation instances) is scored
every ``eval.interval`` steps, so numbers are comparable along the run. Each rank scores a
strided share; the result is the mean over all of them. The downstream tasks of the
evaluation suite plug into this same hook.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from olmo_nn.train.callbacks.base import Callback

if TYPE_CHECKING:
    from olmo_nn.train.trainer import Trainer

__all__ = ["PerplexityEval", "evaluate_perplexity"]


@torch.no_grad()
def evaluate_perplexity(trainer: Trainer) -> dict[str, float]:
    from olmo_nn.train.data_order import InstanceSpace

    config, ctx = trainer.config, trainer.ctx
    data = InstanceSpace(config.data.validation_paths, trainer.sequence_length)
    batch_size = config.eval.batch_size or config.micro_batch_size
    count = min(len(data), config.eval.max_batches * batch_size)
    count -= count % (batch_size * ctx.world_size) or 0
    if count == 0:
        raise ValueError(
            f"validation data {config.data.validation_paths} holds {len(data)} instances of "
            f"{trainer.sequence_length} tokens: too few for one batch of {batch_size} per rank"
        )
    mine = np.arange(count)[ctx.rank :: ctx.world_size]
    total = torch.zeros((), device=ctx.device)
    batches = 0
    was_training = trainer.model.training
    trainer.model.eval()
    for start in range(0, len(mine), batch_size):
        ids = torch.as_tensor(
            np.stack([data[int(i)] for i in mine[start : start + batch_size]]), device=ctx.device
        )
        with trainer.autocast():
            logits = trainer.model(ids[:, :-1])
        total += F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        batches += 1
    trainer.model.train(was_training)
    loss = ctx.all_reduce_mean(total / batches).item()
    return {
        "eval/loss": loss,
        "eval/perplexity": math.exp(min(loss, 50.0)),
        "eval/instances": count,
    }


class PerplexityEval(Callback):
    def needs_model_at(self, trainer: Trainer, step: int) -> bool:
        interval = trainer.config.eval.interval
        return bool(interval) and (step % interval == 0 or step == trainer.config.max_steps)

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if self.needs_model_at(trainer, step):
            assert trainer.step == step, "the trainer flushes at evaluation steps"
            metrics.update(evaluate_perplexity(trainer))
