"""The trainer's extension points.

A callback is told when training starts (after any resume), after every optimizer step
(with that step's metrics), after every checkpoint, and when training ends. Anything a
callback must carry across a restart it rebuilds from the run directory; the trainer's own
state goes through the checkpoint.

Steps' metrics reach ``on_step_end`` in batches: the trainer keeps them on the device and
reads them back once per flush (every ``log_interval`` steps, at checkpoint steps, at the
last step, and at the steps that a callback's :meth:`Callback.needs_model_at` asks for), then
calls ``on_step_end`` once per step, in step order. Between flushes the model trains on, so a
callback that looks at the model (an evaluation) names its steps in ``needs_model_at``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from olmo_nn.train.trainer import Trainer

__all__ = ["Callback"]


class Callback:
    """Base class: override the hooks you need; every hook runs on every rank."""

    def on_train_start(self, trainer: Trainer) -> None:
        """After the model, optimizer and data are ready and any checkpoint is restored."""

    def needs_model_at(self, trainer: Trainer, step: int) -> bool:
        """Whether ``on_step_end`` for ``step`` must see the model (and ``trainer.step``) as
        they are right after that step; the trainer then flushes after that step. Asked after
        a step that is not a flush step anyway, on every rank: answer from the config alone, the
        same on all ranks. Default: False."""
        return False

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """For optimizer step ``metrics["step"]``, at the flush after it (see the module
        docstring): ``trainer.step`` may be up to ``log_interval - 1`` steps further, except at
        the steps :meth:`needs_model_at` asks for. ``metrics`` holds plain Python values
        (``tokens_per_s`` and ``mfu`` are the flush interval's); callbacks may add keys to it."""

    def on_checkpoint(self, trainer: Trainer, path: Path, *, step: int, unsharded: bool) -> None:
        """After the checkpoint of ``step`` is complete in ``path`` (renamed into place, its
        ``SHA256SUMS`` written), on every rank. A sharded one written in the background
        (``async_checkpoint``) completes while training goes on: ``trainer.step`` may be
        further than ``step`` then."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last step (or ``--stop-at``) and its checkpoint."""
