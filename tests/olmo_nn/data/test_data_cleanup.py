"""No staging outlives a run: failures clean up, killed runs' leftovers go at the next start,
and a killed run's workers die with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from olmo_nn.data import ShardWriter, tokenize_documents
from olmo_nn.tokenizer import Tokenizer


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_dead_processes_are_removed_at_the_next_start(
    corpus: Path, tmp_path: Path, olmo_tokenizer: Tokenizer
) -> None:
    out = tmp_path / "shards"
    out.mkdir()
    dead = _dead_pid()
    for name in ("part-00000.npy", "part-00000.csv.gz", "index.parquet", "errors.jsonl"):
        (out / f".{name}.tmp-{dead}").write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / f".part-00000.npy.tmp-{live.pid}").write_bytes(b"another run's")
        tokenize_documents([corpus], out, tokenizer=olmo_tokenizer)
        assert _hidden(out) == [f".part-00000.npy.tmp-{live.pid}"]
    finally:
        live.kill()
        live.wait()


def test_a_failed_close_removes_every_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "shards"
    writer = ShardWriter(out, vocab_size=100, eos_token_id=0, max_tokens_per_file=3)
    for i in range(3):
        writer.write([1, 2], id=f"d{i}", source="s")
    renames = 0
    replace = Path.replace

    def failing_replace(self: Path, target: Path) -> Path:
        nonlocal renames
        renames += 1
        if renames == 3:
            raise OSError("No space left on device")
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert _hidden(out) == []
    assert not (out / "manifest.json").exists()


def kill_mid_run(
    command: list[str], started: Callable[[], bool], signal_number: int = signal.SIGKILL
) -> list[psutil.Process]:
    """Start ``command``, signal it once ``started()`` and it has 2+ workers, wait for it to
    end (killed, or exiting 143 on SIGTERM); its workers."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and process.poll() is None:
        workers = psutil.Process(process.pid).children(recursive=True)
        if len(workers) >= 2 and started():
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    os.kill(process.pid, signal_number)
    assert process.wait(timeout=30) in (-signal.SIGKILL, 128 + signal.SIGTERM)
    return workers


def assert_gone(workers: list[psutil.Process], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [w for w in alive if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    for worker in alive:  # not to leave them running after the test fails
        worker.kill()
    assert alive == []


def big_input(folder: Path, copies: int = 20) -> Path:
    """About ``copies`` x 5 MB of documents (hard links of one file: no disk cost)."""
    folder.mkdir(parents=True)
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 250)
    lines = [json.dumps({"id": f"d{i}", "text": f"{i} {text}"}) for i in range(500)]
    first = folder / "part-000.jsonl"
    first.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for i in range(1, copies):
        os.link(first, folder / f"part-{i:03d}.jsonl")
    return folder


def test_killing_tokenize_kills_its_workers_and_its_leftovers_go_later(
    corpus: Path, tmp_path: Path
) -> None:
    inputs, out = big_input(tmp_path / "big"), tmp_path / "shards"
    command = [sys.executable, "-m", "olmo_nn.cli.main", "data", "tokenize", str(inputs)]
    workers = kill_mid_run(
        [*command, "--output", str(out), "--workers", "2", "--no-progress"],
        lambda: out.is_dir() and any(out.glob(".part-00000.npy.tmp-*")),
    )
    assert_gone(workers)
    assert _hidden(out)  # what the killed run was writing
    tokenize_documents([corpus], out)
    assert _hidden(out) == []


def test_terminated_tokenize_cleans_up_at_once(tmp_path: Path) -> None:
    inputs, out = big_input(tmp_path / "big"), tmp_path / "shards"
    command = [sys.executable, "-m", "olmo_nn.cli.main", "data", "tokenize", str(inputs)]
    workers = kill_mid_run(
        [*command, "--output", str(out), "--workers", "2", "--no-progress"],
        lambda: out.is_dir() and any(out.glob(".part-00000.npy.tmp-*")),
        signal.SIGTERM,
    )
    assert_gone(workers)
    assert list(out.iterdir()) == []
