"""Sharded saves in the background: the same checkpoint as a synchronous save, written while
training goes on, one at a time, errors raised in the training process, and two gloo ranks."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.checkpoint import state_dict_saver
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from olmo_nn.parallel import DistributedContext
from olmo_nn.train.async_checkpointing import AsyncCheckpointer, CompletedCheckpoint
from olmo_nn.train.checkpointing import (
    DiskFullError,
    checkpoint_dir,
    read_train_state,
    save_sharded,
    verify_sharded,
)

from .conftest import FreePort, RunRanks

ONE_PROCESS = DistributedContext(0, 1, 0, torch.device("cpu"), False)
TRAIN_STATE = {"step": 1, "rng": "abc"}
CONFIG = {"model": {"d_model": 4}}


def model_and_optimizer(device: str = "cpu") -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    train_step(model, optimizer)  # the optimizer has state to save
    return model, optimizer


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model(torch.ones(2, 4, device=next(model.parameters()).device)).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def saved_state(checkpoint: Path, scratch: Path) -> dict[str, Any]:
    """Every item of a verified sharded checkpoint, read back by DCP's own converter."""
    verify_sharded(checkpoint)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    dcp_to_torch_save(checkpoint, scratch)
    return dict(torch.load(scratch, weights_only=True))


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def held_saves(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """DCP's save in the background waits until the returned event is set: a slow disk."""
    released = threading.Event()
    real_save = state_dict_saver.save

    def held(*args: Any, **kwargs: Any) -> Any:
        assert released.wait(timeout=60), "the test never released the save"
        return real_save(*args, **kwargs)

    monkeypatch.setattr(state_dict_saver, "save", held)  # what async_save's thread calls
    return released


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_background_save_returns_at_once_and_writes_what_a_synchronous_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """On CUDA the shards are staged in pinned host memory with non-blocking copies."""
    ctx = DistributedContext(0, 1, 0, torch.device(device), False)
    model, optimizer = model_and_optimizer(device)
    sync = save_sharded(tmp_path / "sync", 1, model, optimizer, TRAIN_STATE, CONFIG, ctx, keep=2)
    released = held_saves(monkeypatch)
    saver = AsyncCheckpointer(ctx)
    path = saver.start(tmp_path / "async", 1, model, optimizer, TRAIN_STATE, CONFIG, keep=2)
    assert path == checkpoint_dir(tmp_path / "async", 1)
    assert not path.exists()  # returned before the files were written
    assert (path.parent / ".step000001.partial").is_dir()
    assert saver.in_flight == 1
    train_step(model, optimizer)  # training goes on while the save is in flight
    assert saver.poll() is None
    with pytest.raises(RuntimeError, match="the save of step 1 is in flight: wait"):
        saver.start(tmp_path / "async", 2, model, optimizer, TRAIN_STATE, CONFIG, keep=2)
    released.set()
    assert saver.wait() == CompletedCheckpoint(1, path)
    assert saver.in_flight is None and saver.wait() is None
    saver.close()
    assert [p.name for p in path.parent.iterdir()] == ["step000001"]  # staging renamed
    assert read_train_state(path) == read_train_state(sync) == TRAIN_STATE
    assert (path / "config.yaml").read_bytes() == (sync / "config.yaml").read_bytes()
    written = saved_state(path, tmp_path / "a.pt")
    assert_same(written, saved_state(sync, tmp_path / "s.pt"))
    # The state of the step it was started at, not the model's after the later step.
    assert not torch.equal(written["model"]["0.weight"], model.state_dict()["0.weight"].cpu())


def test_poll_hands_over_a_finished_save_and_keep_prunes_after_the_new_one_is_in_place(
    tmp_path: Path,
) -> None:
    model, optimizer = model_and_optimizer()
    saver = AsyncCheckpointer(ONE_PROCESS)
    for step in (1, 2, 2):  # the second save of step 2 replaces the first
        saver.start(tmp_path, step, model, optimizer, {"step": step}, CONFIG, keep=1)
        deadline = time.monotonic() + 60
        while (done := saver.poll()) is None:
            assert time.monotonic() < deadline, "the save never completed"
            time.sleep(0.01)
        assert done == CompletedCheckpoint(step, checkpoint_dir(tmp_path, step))
        train_step(model, optimizer)
    saver.close()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step000002"]
    verify_sharded(checkpoint_dir(tmp_path, 2))


def test_a_full_disk_in_the_background_is_raised_by_poll_with_the_synchronous_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer = model_and_optimizer()
    saver = AsyncCheckpointer(ONE_PROCESS)
    saver.start(tmp_path, 1, model, optimizer, {"step": 1}, CONFIG, keep=2)
    saver.wait()
    real_save = state_dict_saver.save

    def full_disk(state: dict[str, Any], **kwargs: Any) -> Any:
        real_save({"model": state["model"]}, **kwargs)  # half the files, then no space
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(state_dict_saver, "save", full_disk)
    final = saver.start(tmp_path, 2, model, optimizer, {"step": 2}, CONFIG, keep=2)
    deadline = time.monotonic() + 60
    with pytest.raises(DiskFullError) as raised:
        while saver.poll() is None:
            assert time.monotonic() < deadline, "the save never failed"
            time.sleep(0.01)
    message = str(raised.value)
    assert message.startswith(f"no space left on device: saving {final} needs about ")
    assert message.endswith(
        "MB are free; its partial files were removed. Free some space and run the same command "
        "again to resume from the last checkpoint (the error: OSError: [Errno 28] No space left "
        "on device)"
    )
    assert saver.wait() is None  # raised once, then no longer in flight
    saver.close()
    # The failed save's staging is gone; the previous checkpoint is intact.
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step000001"]
    verify_sharded(checkpoint_dir(tmp_path, 1))


# ------------------------------------------------------------------ two gloo ranks
def _two_rank_worker(rank: int, port: int, tmp: str) -> None:
    torch.set_num_threads(1)  # before any op: a forked child's OpenMP pool would deadlock
    from torch.distributed.fsdp import fully_shard

    import olmo_nn.train.async_checkpointing as async_checkpointing

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistributedContext(rank, 2, rank, torch.device("cpu"), True)
    root = Path(tmp)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4))
        for layer in model:
            fully_shard(layer)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        train_step(model, optimizer)
        save_sharded(root / "sync", 1, model, optimizer, TRAIN_STATE, CONFIG, ctx, keep=2)
        saver = AsyncCheckpointer(ctx)
        saver.start(root / "async", 1, model, optimizer, TRAIN_STATE, CONFIG, keep=2)
        for _ in range(3):  # training's collectives meanwhile, on the default group
            train_step(model, optimizer)
            total = torch.ones(1)
            dist.all_reduce(total)
            assert total.item() == 2
        done = saver.wait()
        assert done == CompletedCheckpoint(1, checkpoint_dir(root / "async", 1))

        if rank == 0:  # rank 0's part fails: the disk fills up while it writes the record

            def full_disk(*_args: object) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            async_checkpointing._write_record = full_disk  # type: ignore[assignment]
        saver.start(root / "async", 2, model, optimizer, TRAIN_STATE, CONFIG, keep=2)
        try:
            saver.wait()
            outcome = "no error"
        except DiskFullError as error:
            outcome = f"DiskFullError: {error}"
        saver.close()
        (root / f"rank{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_save_in_the_background_and_both_raise_rank_0s_error(
    tmp_path: Path, run_ranks: RunRanks, free_port: FreePort
) -> None:
    run_ranks(_two_rank_worker, 2, free_port(), str(tmp_path), timeout_s=120)
    written = checkpoint_dir(tmp_path / "async", 1)
    assert sorted(p.name for p in written.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert read_train_state(written) == TRAIN_STATE
    assert_same(
        saved_state(written, tmp_path / "a.pt"),
        saved_state(checkpoint_dir(tmp_path / "sync", 1), tmp_path / "s.pt"),
    )
    outcomes = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    final = checkpoint_dir(tmp_path / "async", 2)
    assert outcomes[0].startswith(f"DiskFullError: no space left on device: saving {final} ")
    assert outcomes[1] == outcomes[0]  # the other rank raises rank 0's error, not a hang
    assert [p.name for p in final.parent.iterdir()] == ["step000001"]
