"""Cancelling a run stops the stage's whole process tree, torchrun's own group included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from olmo_assets.defs.launch import descendants, stop_process_tree

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")

# A stand-in for a stage: a helper in its own process group (like a process-pool worker), and
# like torchrun a worker in a process group of its own, which run_process_group forwards
# SIGTERM to.
TRAIN_LIKE = """
import os, subprocess, sys
from pathlib import Path
from olmo_assets.lab.steps import run_process_group
helper = "import os, time; from pathlib import Path; Path({helper_pid!r}).write_text(str(os.getpid())); time.sleep(120)"
subprocess.Popen([sys.executable, "-c", helper])
Path({stage_pid!r}).write_text(str(os.getpid()))
sleeper = "import os, time; from pathlib import Path; Path({worker_pid!r}).write_text(str(os.getpid())); time.sleep(120)"
run_process_group([sys.executable, "-c", sleeper])
"""

# A tree that ignores SIGTERM everywhere: only SIGKILL stops it.
STUBBORN = """
import os, signal, subprocess, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sleeper = "import os, signal, time; from pathlib import Path; signal.signal(signal.SIGTERM, signal.SIG_IGN); Path({worker_pid!r}).write_text(str(os.getpid())); time.sleep(120)"
subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)
Path({stage_pid!r}).write_text(str(os.getpid()))
time.sleep(120)
"""


def _wait_for(path: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.1)
    raise TimeoutError(f"{path} never appeared")


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def _script(template: str, tmp_path: Path) -> tuple[str, Path, Path, Path]:
    pids = [tmp_path / f"{name}.pid" for name in ("stage", "worker", "helper")]
    names = ("stage_pid", "worker_pid", "helper_pid")
    code = template.format(**{name: str(path) for name, path in zip(names, pids, strict=True)})
    return code, pids[0], pids[1], pids[2]


@pytest.mark.parametrize("template", [TRAIN_LIKE, STUBBORN], ids=["forwards", "stubborn"])
def test_stop_process_tree_stops_every_process_group(template: str, tmp_path: Path) -> None:
    code, stage_pid, worker_pid, _ = _script(template, tmp_path)
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    worker = _wait_for(worker_pid)
    _wait_for(stage_pid)
    assert worker in descendants(process.pid)
    assert os.getpgid(worker) != os.getpgid(process.pid)
    started = time.monotonic()
    stop_process_tree(process, grace_seconds=2)
    assert process.returncode is not None
    assert _gone(worker)
    assert time.monotonic() - started < 10


RUN = """
import sys
from dagster import AssetExecutionContext, asset, instance_for_test, materialize
from olmo_assets.defs.launch import StageClient

@asset
def training_like(context: AssetExecutionContext, stage_client: StageClient):
    return stage_client.run(context=context, command=[sys.executable, "-c", {code!r}]).get_results()

if __name__ == "__main__":
    with instance_for_test() as instance:
        result = materialize([training_like], instance=instance,
                             resources={{"stage_client": StageClient(termination_timeout_seconds=5)}},
                             raise_on_error=False)
    print("RUN SUCCESS" if result.success else "RUN FAILED", flush=True)
"""


def test_cancelling_a_run_stops_the_stage_and_its_process_groups(tmp_path: Path) -> None:
    code, stage_pid, worker_pid, helper_pid = _script(TRAIN_LIKE, tmp_path)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN).format(code=code), encoding="utf-8")
    run = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OLMO_LAB_REPO": str(tmp_path)},
    )
    try:
        worker, stage, helper = _wait_for(worker_pid), _wait_for(stage_pid), _wait_for(helper_pid)
        # What Dagster does to a step when its run is cancelled: SIGINT (SIGTERM maps to it).
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert "RUN FAILED" in output
    assert "interrupted: stopping process group" in output
    assert _gone(stage) and _gone(worker) and _gone(helper)
