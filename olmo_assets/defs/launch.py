"""Launching the stage command from an asset: Dagster Pipes in a process group of its own.

Dagster's ``PipesSubprocessClient`` answers a cancelled run by sending SIGINT to the one
process it started and waiting; the stage's children (curation's process pools, and
``torchrun`` with its ranks, which the train step starts in a session of its own) would
outlive it. :class:`StageClient` starts the stage in a new session and, on cancellation,
sends SIGTERM to its process group (the train step forwards that to torchrun's group), waits,
then SIGKILLs whatever is left of the whole tree, every process group in it included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    OpExecutionContext,
    PipesSubprocessClient,
    PreviewWarning,
)
from dagster._core.errors import DagsterPipesExecutionError
from dagster._core.pipes.client import PipesClientCompletedInvocation
from dagster._core.pipes.utils import open_pipes_session
from dagster_pipes import PipesExtras

from olmo_assets.defs.stage import STAGE_ERROR

# Dagster's own Pipes session reads a preview property of its message reader; the warning
# says nothing about this code and would repeat on every step.
warnings.filterwarnings("ignore", "Function `PipesMessageReader", PreviewWarning)

__all__ = ["StageClient", "descendants", "stage_command", "stop_process_tree"]


def stage_command(step: str, arguments: Sequence[str]) -> list[str]:
    """The stage command line for a step (the same one dvc.yaml runs)."""
    return [sys.executable, "-m", "olmo_assets.defs.stage", step, *arguments]


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid for every process (Linux ``/proc``; empty elsewhere)."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_pids().items():
        children.setdefault(parent, []).append(child)
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_process_tree(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """SIGTERM ``process``'s group, wait up to ``grace_seconds``, then SIGKILL every process
    left of its tree and of the process groups in it."""
    tree = [process.pid, *descendants(process.pid)]
    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in tree):
        time.sleep(0.2)
        if process.poll() is None:
            tree += [pid for pid in descendants(process.pid) if pid not in tree]
    survivors = [pid for pid in tree if _alive(pid)]
    groups = set()
    for pid in survivors:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups - {os.getpgrp()}:
        _signal_group(group, signal.SIGKILL)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    process.wait()


class StageClient(PipesSubprocessClient):
    """``PipesSubprocessClient`` that starts its command in a new session and stops the whole
    process tree when the run is cancelled or the step fails."""

    def run(  # type: ignore[override]
        self,
        *,
        context: OpExecutionContext | AssetExecutionContext,
        extras: PipesExtras | None = None,
        command: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> PipesClientCompletedInvocation:
        with open_pipes_session(
            context=context,
            context_injector=self.context_injector,
            message_reader=self.message_reader,
            extras=extras,
        ) as session:
            process = subprocess.Popen(
                command,
                cwd=cwd or self.cwd,
                env={
                    **os.environ,
                    **self.env,
                    **(env or {}),
                    **session.get_bootstrap_env_vars(),
                },
                start_new_session=True,
            )
            try:
                code = process.wait()
            except BaseException:
                # DagsterExecutionInterruptedError (the run was cancelled) and anything else.
                context.log.info(
                    f"[pipes] interrupted: stopping process group {process.pid} and its tree"
                )
                if self.forward_termination:
                    stop_process_tree(process, self.termination_timeout_seconds)
                raise
        invocation = PipesClientCompletedInvocation(session)
        if code != 0:
            # The stage reports why it failed (e.g. a missing input's path) as a custom message.
            reasons = [
                message[STAGE_ERROR]
                for message in invocation.get_custom_messages()
                if isinstance(message, dict) and STAGE_ERROR in message
            ]
            shown = command if isinstance(command, str) else " ".join(command)
            raise DagsterPipesExecutionError(
                f"{shown} exited with status {code}: "
                + (reasons[-1] if reasons else "see the step's stderr for the cause")
            )
        return invocation
