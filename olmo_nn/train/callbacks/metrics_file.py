"""``RUN_DIR/metrics.jsonl``: one JSON line per optimizer step, written by rank 0.

On resume, lines past the restored checkpoint's step (written before a crash) are dropped,
so the file always describes one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from olmo_nn.train.callbacks.base import Callback

if TYPE_CHECKING:
    from olmo_nn.train.trainer import Trainer

__all__ = ["METRICS_FILE", "MetricsFile", "read_metrics"]

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable
    return value


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All step records of a run, in order."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


class MetricsFile(Callback):
    """Appends each step's metrics; truncates to the resumed step at start."""

    def __init__(self) -> None:
        self._file: TextIO | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.ctx.is_main:
            return
        path = trainer.run_dir / METRICS_FILE
        kept = [m for m in read_metrics(trainer.run_dir) if m["step"] <= trainer.step]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in kept), encoding="utf-8")
        os.replace(tmp, path)
        self._file = path.open("a", encoding="utf-8")

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({k: _plain(v) for k, v in metrics.items()}) + "\n")
            self._file.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
