"""What every benchmark shares: timing whole commands with their peak memory, interleaving
ours and the peers on the same work, and writing ``benchmarks/results/<name>.json``.

A benchmark builds its inputs once, then calls :func:`compare` with one entry per side: a
command line (the whole command a user runs, measured as a child process: wall seconds, the
largest process's peak RSS and the whole process tree's peak RSS) or a Python callable (the
core call, measured in this process). Sides run interleaved, ``repeats`` times each after one
untimed warm-up, so background noise hurts every side alike; the median is the figure and
every run is kept. :func:`write_results` records the figures with the machine, the versions of
every package involved (ours and each peer environment's), the inputs and the command that
produced them. ``benchmarks/table.py`` turns the results into the README's table.

A peer that fails (non-zero exit, an exception) is recorded as failed with the tail of its
output, never dropped: the table shows the failure.

A side may also clean up before each run, untimed (``before``: remove the last run's output),
skip the warm-up (``warmup=False``, for a slow peer; say so in the inputs), or report its own
core-call time (``reported_seconds``: a script in a peer's environment that times only the
engine call, its wall time kept beside). Whole commands record their CPU seconds (user +
system, the children they waited for included) and rows their ``cpu_ratio``, which a busy
machine disturbs less than wall time.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCH_VENV = ROOT / ".venv-bench"
"""The peers' environment (`make bench` creates it: requirements/bench.txt)."""
DOLMA_VENV = ROOT / ".venv-dolma"
"""The Dolma toolkit's own environment: its pins conflict with the peers' (requirements/dolma.txt)."""
POLL_SECONDS = 0.02


def peer_python(venv: Path = BENCH_VENV) -> Path:
    """The interpreter of a peer environment, or an error that says how to create it."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{venv} does not exist: `make bench` creates it (or `make bench-venv`)")
    return python


@dataclass
class Run:
    """One timed run of one side."""

    seconds: float
    peak_rss_mb: float | None = None
    """The largest single process's peak resident memory (the kernel's maxrss)."""
    peak_tree_rss_mb: float | None = None
    """The whole process tree's peak resident memory, sampled every 20 ms."""
    returncode: int = 0
    output_tail: str = ""
    cpu_seconds: float | None = None
    """User + system CPU time of a command and the descendants it waited for (robust to a
    busy machine, unlike wall time)."""
    value: Any = None
    """What a callable returned (for checking that the sides agree)."""
    wall_seconds: float | None = None
    """The command's wall time, when ``seconds`` is what it reported (``Side.reported_seconds``)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Side:
    """One side of a comparison: a whole command (``argv``) or a core call (``call``)."""

    name: str
    argv: Sequence[str] | None = None
    call: Callable[[], Any] | None = None
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    before: Callable[[], Any] | None = None
    """Called before every run of this side, untimed (say, to remove the last run's output)."""
    warmup: bool = True
    """Whether :func:`compare` gives this side its untimed warm-up run (a benchmark that
    skips it for a slow peer says so in its inputs)."""
    reported_seconds: str | None = None
    """For a command that times its own core call (a peer's engine called by a script in the
    peer's environment, loading excluded): a regular expression whose first group, in the
    command's output (its last match), is the seconds to record. The wall time is kept as
    ``wall_seconds``."""
    runs: list[Run] = field(default_factory=list)

    def run_once(self) -> Run:
        if self.before is not None:
            self.before()
        if self.call is not None:
            return _time_call(self.call)
        assert self.argv is not None, f"{self.name}: give argv or call"
        run = run_command(self.argv, env=self.env, cwd=self.cwd)
        if self.reported_seconds is not None and run.ok:
            found = re.findall(self.reported_seconds, run.output_tail)
            if not found:
                run.returncode = 1
                run.output_tail += f"\n(no line matching {self.reported_seconds!r} in the output)"
            else:
                run.wall_seconds, run.seconds = run.seconds, float(found[-1])
        return run

    def record(self) -> dict[str, Any]:
        """The side's figures: median seconds and peak memory over its timed runs."""
        ok = [run for run in self.runs if run.ok]
        out: dict[str, Any] = {
            "command": shlex.join(self.argv) if self.argv is not None else None,
            "runs_seconds": [round(run.seconds, 4) for run in self.runs],
            "failed": len(ok) < len(self.runs),
        }
        if self.reported_seconds is not None:
            out["seconds_reported_by_the_command"] = True
            walls = [run.wall_seconds for run in self.runs if run.wall_seconds is not None]
            out["runs_wall_seconds"] = [round(seconds, 4) for seconds in walls]
        if not self.warmup:
            out["warm_up"] = False
        if ok:
            out["seconds"] = round(statistics.median(run.seconds for run in ok), 4)
            out["best_seconds"] = round(min(run.seconds for run in ok), 4)
            cpu = [run.cpu_seconds for run in ok if run.cpu_seconds is not None]
            if cpu and self.reported_seconds is None:  # not comparable to a reported time
                out["cpu_seconds"] = round(statistics.median(cpu), 4)
            rss = [run.peak_rss_mb for run in ok if run.peak_rss_mb is not None]
            tree = [run.peak_tree_rss_mb for run in ok if run.peak_tree_rss_mb is not None]
            if rss:
                out["peak_rss_mb"] = round(max(rss), 1)
            if tree:
                out["peak_tree_rss_mb"] = round(max(tree), 1)
        if out["failed"]:
            failed = next(run for run in self.runs if not run.ok)
            out["returncode"] = failed.returncode
            out["error"] = failed.output_tail
        return out


def _time_call(call: Callable[[], Any]) -> Run:
    start = time.perf_counter()
    try:
        value = call()
    except Exception as error:  # a peer's failure is a result, not a crash of the benchmark
        return Run(time.perf_counter() - start, returncode=1, output_tail=repr(error)[-2000:])
    return Run(time.perf_counter() - start, value=value)


def _tree_rss(process: psutil.Process, cpu: dict[int, float] | None = None) -> int:
    """The tree's resident memory now; ``cpu`` gets each process's CPU seconds so far."""
    total = 0
    try:
        procs = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
            if cpu is not None:
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
    return total


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> Run:
    """Run a whole command as a user does; wall time, peak RSS and the output's tail."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        watched = psutil.Process(process.pid)
        peak_tree = 0
        sampled_cpu: dict[int, float] = {}
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not stop.is_set():
                peak_tree = max(peak_tree, _tree_rss(watched, sampled_cpu))
                stop.wait(POLL_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = None if timeout is None else start + timeout
        status = rusage = None
        while status is None:
            pid, status_code, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                status, rusage = status_code, usage
                break
            if deadline is not None and time.perf_counter() > deadline:
                process.kill()
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        tail = log.read()[-4000:].decode("utf-8", "replace")
    return Run(
        seconds=seconds,
        peak_rss_mb=rusage.ru_maxrss / 1024 if rusage is not None else None,  # KiB on Linux
        peak_tree_rss_mb=peak_tree / 2**20 or None,
        returncode=process.returncode,
        output_tail=tail,
        # The kernel's count covers only the descendants that were waited for (a pool's
        # workers often are not); the samples (every 20 ms) cover the others.
        cpu_seconds=max(
            rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0,
            sum(sampled_cpu.values()),
        )
        or None,
    )


def compare(sides: Sequence[Side], *, repeats: int = 3, warmup: bool = True) -> list[Side]:
    """Run every side ``repeats`` times, interleaved, after one untimed warm-up each."""
    names = [side.name for side in sides]
    if len(set(names)) != len(names):
        raise ValueError(f"side names must differ: {names}")
    if warmup:
        for side in sides:
            if not side.warmup:
                continue
            run = side.run_once()
            _report(side, run, "warm-up")
    for index in range(repeats):
        for side in sides:
            run = side.run_once()
            side.runs.append(run)
            _report(side, run, f"run {index + 1}/{repeats}")
    return list(sides)


def _report(side: Side, run: Run, label: str) -> None:
    memory = f", peak RSS {run.peak_rss_mb:.0f} MB" if run.peak_rss_mb else ""
    state = "" if run.ok else f"  FAILED (exit {run.returncode}): {run.output_tail[-300:]!r}"
    print(f"  {side.name:<28} {label:<9} {run.seconds:8.2f} s{memory}{state}", flush=True)


def row(
    *,
    work: str,
    measure: str,
    ours: Side,
    peer: Side,
    goal: float | None = None,
    unit_of_work: float | None = None,
    unit: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One line of the table: ours against one peer on ``work``; ratio = peer's / ours' time.

    ``measure`` is ``"whole command"`` or ``"core call"``. With ``unit_of_work`` (say, MB of
    text or requests) each side's rate in ``unit`` per second is recorded beside the time;
    ``extra`` adds fields to the row (a figure a side logs itself, the FLOP share of a shape).
    """
    mine, theirs = ours.record(), peer.record()
    out: dict[str, Any] = {
        "work": work,
        "measure": measure,
        "peer": peer.name,
        "ours": mine,
        "theirs": theirs,
        "goal": goal,
    }
    if unit_of_work is not None and unit is not None:
        out["unit"] = unit
        for side in (mine, theirs):
            if "seconds" in side:
                side["rate"] = round(unit_of_work / side["seconds"], 3)
    if "cpu_seconds" in mine and "cpu_seconds" in theirs and mine["cpu_seconds"] > 0:
        out["cpu_ratio"] = round(theirs["cpu_seconds"] / mine["cpu_seconds"], 2)
    # A ratio only when every timed run of both sides succeeded: a failure on either side,
    # ours included, is shown as such, never averaged away.
    if "seconds" in mine and "seconds" in theirs and not mine["failed"] and not theirs["failed"]:
        out["ratio"] = round(theirs["seconds"] / mine["seconds"], 2)
        out["met"] = None if goal is None else out["ratio"] >= goal
    else:
        out["ratio"] = None
        out["met"] = None if goal is None else False
    out.update(extra or {})
    return out


def versions(python: Path | str = sys.executable, packages: Sequence[str] = ()) -> dict[str, str]:
    """The installed versions of ``packages`` in the environment of ``python``."""
    script = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: out[name] = 'not installed'\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [str(python), "-c", script, *packages], capture_output=True, text=True, check=True
    )
    return dict(json.loads(result.stdout))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def write_results(
    name: str,
    *,
    rows: Sequence[Mapping[str, Any]],
    inputs: Mapping[str, Any],
    versions: Mapping[str, Mapping[str, str]],
    extra: Mapping[str, Any] | None = None,
    folder: Path = RESULTS,
) -> Path:
    """Write ``folder/<name>.json``: the rows with the machine, versions, inputs and command."""
    payload = {
        "benchmark": name,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine(),
        "versions": {env: dict(packages) for env, packages in versions.items()},
        "inputs": dict(inputs),
        "rows": list(rows),
        **dict(extra or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    for item in rows:
        ratio = item.get("ratio")
        goal = item.get("goal")
        verdict = (
            "" if goal is None else ("  goal met" if item.get("met") else f"  goal {goal}x NOT met")
        )
        shown = "peer failed" if ratio is None else f"{ratio:.2f}x"
        print(f"  {item['work']} [{item['measure']}] vs {item['peer']}: {shown}{verdict}")
    return path
