"""The trainer's extension points.

A callback is told when training starts (after any resume), after every optimizer step
(with that step's metrics), after every checkpoint, and when training ends. Anything a
callback must carry across a restart it rebuilds from the run directory; the trainer's own
state goes through the checkpoint.
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

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After optimizer step ``metrics["step"]``; callbacks may add keys to ``metrics``."""

    def on_checkpoint(self, trainer: Trainer, path: Path, *, step: int, unsharded: bool) -> None:
        """After the checkpoint of ``step`` is complete in ``path`` (renamed into place, its
        ``SHA256SUMS`` written), on every rank. A sharded one written in the background
        (``async_checkpoint``) completes while training goes on: ``trainer.step`` may be
        further than ``step`` then."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last step (or ``--stop-at``) and its checkpoint."""
