"""A real two-node Slurm cluster on this machine for tests: started once per test session.

Use it by importing the fixture into a test module::

    from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

``local_slurm(root)`` writes a ``slurm.conf`` under ``root`` (free ports, state, spool, pid and
log files all there), starts munged unless one is already running, then slurmctld and two
slurmd (nodes ``n1`` and ``n2``, both on localhost, 2 CPUs each, partition ``debug``), and waits
until both nodes are idle. Clients find the cluster through ``SLURM_CONF`` (``cluster.env``).
On exit it cancels every job, stops the daemons it started, and leaves an already-running
munged alone.

It needs Debian's slurm-wlm and munge, and root (munged runs as the munge user, and slurmd
as root runs the jobs). Without them the fixture skips, or fails where ``OLMO_REQUIRE_SLURM``
is set (``make test`` sets it after installing both as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_STARTUP_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_NODES = ("n1", "n2")
_PARTITION = "debug"

_SBIN = Path("/usr/sbin")
_MUNGE_USER = "munge"
_MUNGE_KEY = Path("/etc/munge/munge.key")
_MUNGE_RUN = Path("/run/munge")
_MUNGE_PID = _MUNGE_RUN / "munged.pid"
_CLIENTS = ("sinfo", "srun", "sbatch", "scontrol", "scancel", "squeue", "munge")

_INSTALL_HINT = "make test installs slurm-wlm and munge when run as root"


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster: pass ``env`` to clients (srun, sbatch, ...) to reach it."""

    root: Path
    conf: Path
    env: dict[str, str]
    nodes: list[str] = field(default_factory=lambda: list(_NODES))
    partition: str = _PARTITION


def _daemon(name: str) -> str | None:
    path = _SBIN / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    return shutil.which(name)


def unavailable_reason() -> str | None:
    """Why a local cluster cannot start here, or None where it can."""
    missing = [n for n in ("slurmctld", "slurmd", "munged") if _daemon(n) is None]
    missing += [n for n in _CLIENTS if shutil.which(n) is None]
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}; {_INSTALL_HINT})"
    if os.geteuid() != 0:
        return (
            "the local Slurm cluster needs root (munged runs as the munge user and slurmd "
            f"runs the jobs; {_INSTALL_HINT})"
        )
    if not _MUNGE_KEY.is_file():
        return f"munge has no key at {_MUNGE_KEY} ({_INSTALL_HINT})"
    return None


def _free_ports(count: int) -> list[int]:
    # Hold every probe open until all are bound, so the ports are distinct.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket())
            probe.bind(("", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def _write_conf(root: Path) -> Path:
    ctld_port, slurmd_port, *node_ports = _free_ports(2 + len(_NODES))
    for sub in ("state", "run", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lines = [
        "ClusterName=lab",
        "SlurmctldHost=localhost",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        # A requeued job waits out its old credential (120 s by default) before it starts again.
        "AuthInfo=cred_expire=10",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool_%n",
        f"SlurmctldPidFile={root}/run/slurmctld.pid",
        f"SlurmdPidFile={root}/run/slurmd-%n.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        # Both nodes are this machine: take CPUs and memory from here, not from the hardware.
        "SlurmdParameters=config_overrides",
        "KillWait=5",
        "InactiveLimit=0",
    ]
    lines += [
        f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} "
        "CPUs=2 RealMemory=4000 State=UNKNOWN"
        for node, port in zip(_NODES, node_ports, strict=True)
    ]
    lines.append(
        f"PartitionName={_PARTITION} Nodes={','.join(_NODES)} Default=YES MaxTime=INFINITE "
        "State=UP OverSubscribe=YES"
    )
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _munged_answers() -> bool:
    try:
        return _run(["munge", "-n"]).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _start_munged() -> None:
    _MUNGE_RUN.mkdir(parents=True, exist_ok=True)
    shutil.chown(_MUNGE_RUN, _MUNGE_USER, _MUNGE_USER)
    # --force: a munged that died left its socket behind.
    started = _run(["runuser", "-u", _MUNGE_USER, "--", str(_daemon("munged")), "--force"])
    if started.returncode != 0:
        raise RuntimeError(f"munged did not start:\n{started.stdout}{started.stderr}")
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while not _munged_answers():
        if time.monotonic() > deadline:
            raise RuntimeError("munged started but `munge -n` did not succeed")
        time.sleep(0.1)


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it has stopped all the same.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop(pid_file: Path) -> None:
    """SIGTERM the daemon named in ``pid_file``, wait, then SIGKILL it."""
    # A daemon that has just forked may not have written its pid file yet.
    deadline = time.monotonic() + 2.0
    while (pid := _pid(pid_file)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid is None or not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)


def _log_tails(root: Path, lines: int = 20) -> str:
    tails = []
    for log in sorted((root / "log").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log} ---\n" + "\n".join(text))
    return "\n".join(tails) or f"(no logs under {root / 'log'})"


def _node_states(env: dict[str, str]) -> dict[str, str]:
    listed = _run(["sinfo", "-h", "-N", "-o", "%N %T"], env)
    states = {}
    for line in listed.stdout.splitlines():
        node, _, state = line.strip().partition(" ")
        states[node] = state
    return states


def _wait_until_idle(root: Path, env: dict[str, str]) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = _node_states(env)
        if all(states.get(node) == "idle" for node in _NODES):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"the local Slurm cluster's nodes were not idle after {_STARTUP_TIMEOUT_S:.0f} s "
        f"(sinfo: {states or 'no answer'}):\n{_log_tails(root)}"
    )


def _start(args: list[str], root: Path) -> None:
    started = _run(args)
    if started.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited with {started.returncode}:\n"
            f"{started.stdout}{started.stderr}\n{_log_tails(root)}"
        )


def _cancel_all(env: dict[str, str]) -> None:
    jobs = _run(["squeue", "-h", "-o", "%A"], env).stdout.split()
    if not jobs:
        return
    _run(["scancel", *jobs], env)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _run(["squeue", "-h", "-o", "%A"], env).stdout.split():
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _kill_leftovers(root: Path) -> None:
    """Kill what jobs left once their slurmd stopped: every process started in ``root`` (a
    ``slurmstepd`` in its spool folder) or naming it (a batch script), with its children (an
    ``srun`` whose slurmd is gone waits forever, a step's tasks) and a batch script's
    ``slurmstepd``."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        in_root = (process.info["cwd"] or "").startswith(str(root))
        if in_root or any(str(root) in part for part in process.info["cmdline"] or ()):
            found.append(process)
    for process in found:
        with contextlib.suppress(psutil.Error):
            tree = [*process.children(recursive=True), process]
            parent = process.parent()
            if parent is not None and parent.name().startswith("slurmstepd"):
                tree.append(parent)
            for member in tree:
                with contextlib.suppress(psutil.Error):
                    member.kill()


@contextlib.contextmanager
def local_slurm(root: Path) -> Iterator[SlurmCluster]:
    """Start munged (if needed), slurmctld and two slurmd under ``root``; stop them on exit."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    conf = _write_conf(root)
    env = {"SLURM_CONF": str(conf)}
    ctld, slurmd = str(_daemon("slurmctld")), str(_daemon("slurmd"))
    started_munged = False
    started_slurm = False
    try:
        if not _munged_answers():
            _start_munged()
            started_munged = True
        started_slurm = True
        _start([ctld, "-f", str(conf)], root)
        for node in _NODES:
            _start([slurmd, "-f", str(conf), "-N", node], root)
        _wait_until_idle(root, env)
        yield SlurmCluster(root=root, conf=conf, env=env)
    finally:
        if started_slurm:
            ctld_pid = _pid(root / "run" / "slurmctld.pid")
            if ctld_pid is not None and _alive(ctld_pid):
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    _cancel_all(env)
            for node in _NODES:
                _stop(root / "run" / f"slurmd-{node}.pid")
            _stop(root / "run" / "slurmctld.pid")
            _kill_leftovers(root)
        if started_munged:
            _stop(_MUNGE_PID)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The local two-node cluster, for the whole session; skips (or fails) where it cannot run."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("OLMO_REQUIRE_SLURM"):
            pytest.fail(f"{reason}, and this run requires the Slurm tests")
        pytest.skip(reason)
    with local_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
