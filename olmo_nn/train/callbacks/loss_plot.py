"""``RUN_DIR/loss.png``: the loss curve, redrawn at each checkpoint and at the end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from olmo_nn.train.callbacks.base import Callback
from olmo_nn.train.callbacks.metrics_file import read_metrics

if TYPE_CHECKING:
    from olmo_nn.train.trainer import Trainer

__all__ = ["LOSS_PLOT", "LossPlot", "plot_loss"]

LOSS_PLOT = "loss.png"


def plot_loss(run_dir: Path) -> Path | None:
    """Draw training (and validation, where logged) loss against step; None without data."""
    records = read_metrics(run_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    losses = [float(r["loss"]) for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, losses, linewidth=1.0, label="train loss")
    evals = [(r["step"], float(r["eval/loss"])) for r in records if "eval/loss" in r]
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", linewidth=1.2, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = run_dir / LOSS_PLOT
    fig.savefig(path)
    plt.close(fig)
    return path


class LossPlot(Callback):
    def __init__(self) -> None:
        self._plotted_step: int | None = None
        """The step the plot was last drawn at: the end of a run, which has just saved its
        last checkpoint, does not draw the same plot again (matplotlib costs ~1 s)."""

    def on_checkpoint(self, trainer: Trainer, path: Path, *, step: int, unsharded: bool) -> None:
        if trainer.ctx.is_main and not unsharded:
            plot_loss(trainer.run_dir)
            self._plotted_step = trainer.step

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.ctx.is_main and self._plotted_step != trainer.step:
            plot_loss(trainer.run_dir)
            self._plotted_step = trainer.step
