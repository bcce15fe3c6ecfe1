"""Stopping a run early on request, with a checkpoint to resume from (preemption).

Anything that knows the run directory may ask a running trainer to stop: it creates
``RUN_DIR/stop-request`` (a Slurm batch script does, when Slurm warns it of the time limit or
of preemption; a person may ``touch`` it). The trainer looks for the file at each of its
metric flushes, on rank 0, and all ranks agree: so a request is honoured at the next
``log_interval`` step, or at an earlier checkpoint or in-loop evaluation step (allow that many
steps' time before a kill). It saves a sharded checkpoint at that step, replaces the
request by ``RUN_DIR/stopped.json`` (the step and the checkpoint, written after the
checkpoint is complete) and ``olmo train`` exits with :data:`STOPPED_EXIT`. The same command
started again resumes from that checkpoint, exactly as from any other.

A leftover request stops the next launch at its first flush: whatever starts a run afresh
(the batch script does) removes both files first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["STOPPED_EXIT", "STOPPED_FILE", "STOP_REQUEST_FILE", "mark_stopped", "stop_requested"]

STOP_REQUEST_FILE = "stop-request"
"""Created (empty) to ask the trainer to save and stop at its next flush of metrics."""

STOPPED_FILE = "stopped.json"
"""Written by the trainer once it saved and stopped on request: ``{"step", "checkpoint"}``."""

STOPPED_EXIT = 75
"""``olmo train``'s exit status after stopping on request (``EX_TEMPFAIL``: run it again to
resume). Under ``torchrun`` it is each rank's status; ``torchrun`` itself then exits 1."""


def stop_requested(run_dir: Path) -> bool:
    """Whether someone asked the run to stop."""
    return (run_dir / STOP_REQUEST_FILE).exists()


def mark_stopped(run_dir: Path, step: int, checkpoint: Path) -> Path:
    """Record that the run stopped on request after ``step`` (the request is answered)."""
    path = run_dir / STOPPED_FILE
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(
        json.dumps({"step": step, "checkpoint": str(checkpoint)}) + "\n", encoding="utf-8"
    )
    os.replace(staging, path)
    (run_dir / STOP_REQUEST_FILE).unlink(missing_ok=True)
    return path
