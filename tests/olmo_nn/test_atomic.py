"""Atomic folders: staging never outlives a failure, and a killed writer's is removed later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from olmo_nn.atomic import staged_folder

# A writer that stages a folder, then is killed (or sleeps) inside the block.
WRITER = """
import os, signal, sys, time
from pathlib import Path
from olmo_nn.atomic import staged_folder
with staged_folder(Path(sys.argv[1])) as staged:
    staged.mkdir()
    (staged / "half.txt").write_text("half-written")
    print("staged", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
"""


def _writer(target: Path, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), mode], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "staged\n"
    return process


def _beside(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir())


def test_failure_removes_the_staging(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_folder(target) as staged:
        staged.mkdir()
        (staged / "a").write_text("a")
        raise RuntimeError("boom")
    assert _beside(target) == []


def test_a_killed_writers_staging_is_removed_at_the_next_start(tmp_path: Path) -> None:
    target = tmp_path / "out"
    writer = _writer(target, "kill")
    assert writer.wait() == -signal.SIGKILL
    assert len(_beside(target)) == 1 and _beside(target)[0].startswith(".out.")
    with staged_folder(target) as staged:
        staged.mkdir()
        (staged / "done.txt").write_text("done")
    assert _beside(target) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ["done.txt"]


def test_a_live_writers_staging_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out"
    writer = _writer(target, "sleep")
    try:
        (workspace,) = _beside(target)
        with staged_folder(target) as staged:
            staged.mkdir()
        assert _beside(target) == sorted([workspace, "out"])
        assert (tmp_path / workspace / "staged" / "half.txt").is_file()
    finally:
        writer.kill()
        writer.wait()
    # Dead now: the next writer removes it.
    with staged_folder(target) as staged:
        staged.mkdir()
    assert _beside(target) == ["out"]


def test_sigterm_runs_the_clean_up(tmp_path: Path) -> None:
    """A terminated CLI process (SIGTERM made an exit, as the data commands do) removes its staging."""
    script = "from olmo_nn.data.workers import exit_on_sigterm\n" + WRITER.replace(
        "with staged_folder", "with exit_on_sigterm(), staged_folder"
    )
    target = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(target), "sleep"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "staged\n"
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=10) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 5
    while _beside(target) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _beside(target) == []
