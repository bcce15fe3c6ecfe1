"""Child processes that never outlive the step that started them.

A step may start process pools (curation, tokenization) and ``torchrun`` with its ranks.
Whoever stops the step — Ctrl-C, ``dvc repro`` being interrupted, a run cancelled in the
Dagster UI (SIGINT), or its launcher dying (SIGTERM through the parent-death signal) — must
stop all of them. The one way to do that is here: :func:`stop_tree` (SIGTERM to every
process below, a grace period, then SIGKILL), installed as the handler of SIGINT and SIGTERM
by :func:`children_stop_with_this_process`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType

import psutil

__all__ = [
    "FAILURE_FILE",
    "LAUNCHER_PID",
    "best_effort",
    "children_stop_with_this_process",
    "run_command",
    "stop_tree",
    "stop_with_parent",
]

GRACE_SECONDS = 10.0


def _children(root: psutil.Process) -> list[psutil.Process]:
    try:
        return list(root.children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def stop_tree(
    root: psutil.Process, grace_seconds: float = GRACE_SECONDS, *, include_root: bool = True
) -> None:
    """SIGTERM ``root`` (unless ``include_root`` is false) and every process below it, wait up
    to ``grace_seconds``, then SIGKILL what is left — children started meanwhile included."""
    tree = [*([root] if include_root else []), *_children(root)]
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace_seconds)
    alive += [p for p in _children(root) if p not in alive]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_seconds)


@contextlib.contextmanager
def children_stop_with_this_process(grace_seconds: float = GRACE_SECONDS) -> Iterator[None]:
    """While inside, SIGINT or SIGTERM stops every child process (:func:`stop_tree`) and then
    raises ``KeyboardInterrupt`` here, so staged outputs are cleaned up on the way out."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_tree(psutil.Process(), grace_seconds, include_root=False)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


LAUNCHER_PID = "OLMO_LAUNCHER_PID"
"""Set by a launcher to its own pid, so a child can tell whether it already died."""

FAILURE_FILE = "OLMO_STAGE_FAILURE_FILE"
"""Where a stage command launched through Pipes writes why it failed (the launcher's step
then fails with that message rather than the exit code alone)."""


def stop_with_parent() -> None:
    """Have Linux send this process SIGTERM when its parent dies (a launcher killed outright
    cannot stop its children itself). Should the launcher (``$OLMO_LAUNCHER_PID``) have died
    before this took effect, the process stops now. No-op outside Linux."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    launcher = os.environ.get(LAUNCHER_PID)
    if launcher is not None and os.getppid() != int(launcher):
        os.kill(os.getpid(), signal.SIGTERM)


def best_effort(poll: Callable[[], None]) -> None:
    """Call ``poll``; its failure is reported, never allowed to stop the command it follows."""
    try:
        poll()
    except Exception as error:  # following is best effort: the work goes on
        warnings.warn(
            f"following the command failed: {type(error).__name__}: {error}", stacklevel=2
        )


def run_command(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    poll: Callable[[], None] | None = None,
    poll_seconds: float = 2.0,
) -> None:
    """Run ``command`` to completion; if this process is interrupted meanwhile, the command's
    whole tree is stopped first. A non-zero exit raises ``CalledProcessError``.

    ``poll``, if given, is called every ``poll_seconds`` while the command runs and once after
    it exits (to follow a file it writes, say); it runs here, so the command is not slowed.
    """
    process = subprocess.Popen(list(command), env=dict(env) if env is not None else None)
    try:
        while True:
            try:
                code = process.wait(timeout=poll_seconds if poll is not None else None)
                break
            except subprocess.TimeoutExpired:
                assert poll is not None
                best_effort(poll)
        if poll is not None:
            best_effort(poll)
    except BaseException:
        with contextlib.suppress(psutil.NoSuchProcess):
            stop_tree(psutil.Process(process.pid))
        process.wait()
        raise
    if code != 0:
        raise subprocess.CalledProcessError(code, list(command))
