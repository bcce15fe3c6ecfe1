"""A progress line every ``log_interval`` steps: loss, LR, grad norm, tokens/s and MFU.

Tokens/s and MFU are those of the whole interval since the previous line's flush (loader,
callbacks and checkpoints included), the loss and grad norm the printed step's.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from olmo_nn.train.callbacks.base import Callback

if TYPE_CHECKING:
    from olmo_nn.train.trainer import Trainer

__all__ = ["ConsoleProgress"]


class ConsoleProgress(Callback):
    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        if not trainer.ctx.is_main or (
            step % trainer.config.log_interval and step != trainer.config.max_steps
        ):
            return
        mfu = metrics.get("mfu")
        line = (
            f"step {step:>6}/{trainer.config.max_steps}  loss {metrics['loss']:.4f}  "
            f"lr {metrics['lr']:.2e}  grad_norm {metrics['grad_norm']:.3f}  "
            f"{metrics['tokens_per_s']:,.0f} tok/s"
            + (f"  MFU {mfu:.1%}" if mfu is not None else "")
            + (f"  eval loss {metrics['eval/loss']:.4f}" if "eval/loss" in metrics else "")
            + ("  [skipped]" if metrics.get("skipped") else "")
        )
        print(line, file=sys.stdout, flush=True)
