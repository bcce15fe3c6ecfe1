"""``RUN_DIR/metrics.jsonl``: one JSON line per optimizer step, written by rank 0.

Lines arrive in batches, at each of the trainer's flushes (every ``log_interval`` steps, and
at checkpoint, evaluation and last steps); ``tokens_per_s`` and ``mfu`` on a line are those
of the flush interval it belongs to, the other values the step's own.

On resume, lines past the restored checkpoint's step (written before a crash) are dropped,
so the file always describes one uninterrupted run. A last line cut off by a crash or a full
disk is dropped too, saying so; a broken line anywhere else is an error naming it.
"""

from __future__ import annotations

import json
import math
import os
import sys
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


def _read(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """The records of ``path``, and the number of its last line if that one was cut off."""
    if not path.is_file():
        return [], None
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((n for n, line in enumerate(lines, 1) if line.strip()), default=0)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == last:
                return records, number
            raise ValueError(
                f"{path}, line {number}: not valid JSON ({error}); only a cut-off last line is "
                "repaired: fix or remove this line"
            ) from None
    return records, None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All step records of a run, in order (without a last line a crash cut off)."""
    path = run_dir / METRICS_FILE
    records, torn = _read(path)
    if torn is not None:
        print(f"{path}: line {torn} was cut off (a crash or a full disk); ignored", file=sys.stderr)
    return records


class MetricsFile(Callback):
    """Appends each step's metrics; truncates to the resumed step at start."""

    def __init__(self) -> None:
        self._file: TextIO | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.ctx.is_main:
            return
        path = trainer.run_dir / METRICS_FILE
        records, torn = _read(path)
        if torn is not None:
            print(
                f"{path}: line {torn} was cut off (a crash or a full disk while it was written); "
                "dropped it",
                file=sys.stderr,
            )
        kept = [m for m in records if m["step"] <= trainer.step]
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
