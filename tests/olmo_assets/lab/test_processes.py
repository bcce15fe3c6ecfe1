"""Processes a step starts never outlive it: stopping the step stops its whole tree, process
groups of their own included — from a signal, and from a Dagster run being cancelled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from olmo_assets.lab.processes import stop_tree

# A stand-in for a stage: under children_stop_with_this_process, a helper (like a process
# pool's worker) and, through run_command, a torchrun-like process that starts a worker in a
# session of its own (which ignores SIGTERM: only SIGKILL stops it).
STAGE = """
import os, subprocess, sys
from pathlib import Path
from olmo_assets.lab.processes import children_stop_with_this_process, run_command
pids = Path({pids!r})
helper = "import os, time; from pathlib import Path; Path({pids!r}, 'helper').write_text(str(os.getpid())); time.sleep(120)"
stubborn = "import os, signal, time; from pathlib import Path; signal.signal(signal.SIGTERM, signal.SIG_IGN); Path({pids!r}, 'worker').write_text(str(os.getpid())); time.sleep(120)"
launcher = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {{stubborn!r}}], start_new_session=True); time.sleep(120)"
try:
    with children_stop_with_this_process(grace_seconds=2):
        subprocess.Popen([sys.executable, "-c", helper])
        (pids / "stage").write_text(str(os.getpid()))
        run_command([sys.executable, "-c", launcher])
except KeyboardInterrupt as stopped:
    print("stage stopped:", stopped, flush=True)
    sys.exit(130)
"""


def _wait_for(path: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.1)
    raise TimeoutError(f"{path} never appeared")


def _gone(pid: int, timeout: float = 15) -> bool:
    try:
        process = psutil.Process(pid)
        process.wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    return True


def _stage(tmp_path: Path) -> tuple[str, dict[str, Path]]:
    pids = tmp_path / "pids"
    pids.mkdir()
    paths = {name: pids / name for name in ("stage", "helper", "worker")}
    return textwrap.dedent(STAGE).format(pids=str(pids)), paths


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_stage_and_every_process_it_started(tmp_path: Path, signum: int) -> None:
    code, paths = _stage(tmp_path)
    stage = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    worker, helper = _wait_for(paths["worker"]), _wait_for(paths["helper"])
    _wait_for(paths["stage"])
    assert os.getsid(worker) != os.getsid(stage.pid)  # a session of its own
    stage.send_signal(signum)
    output, _ = stage.communicate(timeout=60)
    assert stage.returncode == 130
    assert f"stage stopped: stopped by {signal.Signals(signum).name}" in output
    assert _gone(worker) and _gone(helper)


def test_stop_tree_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code, paths = _stage(tmp_path)
    stage = subprocess.Popen([sys.executable, "-c", code])
    worker = _wait_for(paths["worker"])
    started = time.monotonic()
    stop_tree(psutil.Process(stage.pid), grace_seconds=1)
    assert stage.wait(timeout=10) is not None
    assert _gone(worker)
    assert time.monotonic() - started < 10


RUN = """
import sys
from dagster import AssetExecutionContext, PipesSubprocessClient, asset, instance_for_test, materialize

@asset
def training_like(context: AssetExecutionContext, client: PipesSubprocessClient):
    return client.run(context=context, command=[sys.executable, "-c", {code!r}]).get_results()

if __name__ == "__main__":
    with instance_for_test() as instance:
        result = materialize([training_like], instance=instance,
                             resources={{"client": PipesSubprocessClient()}}, raise_on_error=False)
    print("RUN SUCCESS" if result.success else "RUN FAILED", flush=True)
"""


def test_cancelling_a_dagster_run_stops_the_stage_and_its_tree(tmp_path: Path) -> None:
    """Dagster's own Pipes client sends the stage SIGINT when its run is interrupted."""
    code, paths = _stage(tmp_path)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN).format(code=code), encoding="utf-8")
    run = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        worker, helper = _wait_for(paths["worker"]), _wait_for(paths["helper"])
        stage = _wait_for(paths["stage"])
        # What Dagster does to a step process when its run is cancelled: SIGINT.
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
    assert "RUN FAILED" in output
    assert "stage stopped: stopped by SIGINT" in output
    assert _gone(stage) and _gone(worker) and _gone(helper)


def test_run_command_polls_while_the_command_runs_and_once_after(tmp_path: Path) -> None:
    from olmo_assets.lab.processes import run_command

    out = tmp_path / "lines"
    script = (
        "import time\nfor i in range(3):\n    open({0!r}, 'a').write(f'{{i}}\\n'); time.sleep(0.3)"
    )
    seen: list[str] = []
    run_command(
        [sys.executable, "-c", script.format(str(out))],
        poll=lambda: seen.append(out.read_text() if out.is_file() else ""),
        poll_seconds=0.1,
    )
    # Several calls while it ran (seeing the file grow), the last one after it exited.
    assert len(seen) >= 4
    assert seen[-1] == "0\n1\n2\n"
    assert any(text not in ("", "0\n1\n2\n") for text in seen)


def test_run_command_without_poll_still_raises_on_failure() -> None:
    from olmo_assets.lab.processes import run_command

    with pytest.raises(subprocess.CalledProcessError):
        run_command([sys.executable, "-c", "raise SystemExit(3)"])


def test_a_failing_poll_is_reported_and_the_command_runs_to_its_end(tmp_path: Path) -> None:
    from olmo_assets.lab.processes import run_command

    out = tmp_path / "done"
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a torn line")

    with pytest.warns(UserWarning, match="following the command failed: ValueError: a torn line"):
        run_command(
            [sys.executable, "-c", f"import time; time.sleep(0.5); open({str(out)!r}, 'w')"],
            poll=broken,
            poll_seconds=0.1,
        )
    assert out.is_file()
    assert len(calls) >= 2
