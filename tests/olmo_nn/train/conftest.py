"""Fixtures for multi-process tests: run a worker on N gloo ranks without hanging."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import torch.multiprocessing as mp

RunRanks = Callable[..., None]
FreePort = Callable[[], int]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_ranks(
    worker: Callable[..., None], world_size: int, *args: object, timeout_s: float = 120.0
) -> None:
    """Run ``worker(rank, *args)`` on ``world_size`` processes; fail (not hang) past ``timeout_s``.

    Forked rather than spawned: a spawned child re-imports torch (seconds per test). The
    worker must set one intra-op thread first, because libgomp deadlocks a forked child whose
    parent already used an OpenMP pool.
    """
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    context = mp.start_processes(
        worker, args=args, nprocs=world_size, join=False, start_method=method
    )
    assert context is not None
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=0.5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world_size} ranks did not finish within {timeout_s} s")


@pytest.fixture
def run_ranks() -> RunRanks:
    return _run_ranks


@pytest.fixture
def free_port() -> FreePort:
    return _free_port
