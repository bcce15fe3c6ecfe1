"""Sharded checkpoints written while training goes on: torch DCP's asynchronous save, with the
files and the atomic guarantee of :func:`~olmo_nn.train.checkpointing.save_sharded`.

:meth:`AsyncCheckpointer.start` (every rank, in the training loop) copies this rank's shards of
the model and optimizer state to host memory (pinned on CUDA; the copy is kept and refilled by
the next save, so a run holds one more host copy of its rank's state) and returns:
``dcp.async_save`` writes the copy into the staging folder ``.stepN.partial`` in a background
thread. When every rank's files are written, rank 0, still in the background, writes
``config.yaml``, ``train_state.json`` and ``SHA256SUMS`` (hashing every file), renames the folder
into place (moving a replaced step's folder aside first) and prunes to ``keep``. A crash or
SIGKILL before the rename leaves the previous checkpoint intact, and a staging folder that the
trainer's next start removes.

One save is in flight at a time. :meth:`~AsyncCheckpointer.poll` (after each step) and
:meth:`~AsyncCheckpointer.wait` (before another save, at the end of training, on a stop request
or an exception) hand back the completed checkpoint, or raise the background's error on every
rank: a full disk is the :class:`~olmo_nn.train.checkpointing.DiskFullError` a synchronous save
raises, with its partial files removed.

The background's collectives (DCP's plan exchange, then the outcome) go over a gloo process
group of their own, made at the first save: DCP needs a CPU backend beside NCCL, and
collectives on the training's group from two threads could pair up differently on each rank.
"""

from __future__ import annotations

import pickle
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from olmo_nn.parallel import DistributedContext
from olmo_nn.train.checkpointing import (
    _begin_sharded,
    _nbytes,
    _put_in_place,
    _saving,
    _sharded_state,
    _write_record,
)

__all__ = ["AsyncCheckpointer", "CompletedCheckpoint"]


@dataclass(frozen=True)
class CompletedCheckpoint:
    """A sharded checkpoint in place under its final name."""

    step: int
    path: Path


@dataclass(frozen=True)
class _InFlight:
    step: int
    path: Path
    done: Future[None]


def _rebuilt(kind: type[BaseException], message: str) -> BaseException:
    """Another rank's error on this rank: its type and message (a RuntimeError where the type
    cannot be rebuilt from the message alone)."""
    try:
        return kind(message)
    except Exception:
        return RuntimeError(message)


class AsyncCheckpointer:
    """Sharded saves in the background, one at a time. Every rank makes the same calls."""

    def __init__(self, ctx: DistributedContext) -> None:
        self.ctx = ctx
        self._in_flight: _InFlight | None = None
        self._stager: DefaultStager | None = None
        self._group: Any = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def in_flight(self) -> int | None:
        """The step whose save is in flight (None when none is)."""
        return None if self._in_flight is None else self._in_flight.step

    def _open(self) -> None:
        cuda = self.ctx.device.type == "cuda"
        # Staged synchronously: the loop's next optimizer step changes the tensors in place.
        options = StagingOptions(
            use_pinned_memory=cuda,
            use_shared_memory=False,
            use_async_staging=False,
            use_non_blocking_copy=cuda,
        )
        self._stager = DefaultStager(options)
        # A single process saves without a process group, as intended, and DCP warns at every
        # save: from the background thread, where warnings.catch_warnings (process-wide, not
        # thread-safe) cannot scope a filter to the call. (Adding it again replaces it.)
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        if dist.is_initialized():
            self._group = dist.new_group(backend="gloo")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="olmo-checkpoint")

    def start(
        self,
        run_dir: Path,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_state: dict[str, Any],
        config: dict[str, Any],
        *,
        keep: int,
    ) -> Path:
        """Begin saving ``step``; returns the folder it will be in once complete."""
        if self._in_flight is not None:
            raise RuntimeError(
                f"the save of step {self._in_flight.step} is in flight: wait() for it before "
                "starting another"
            )
        if self._executor is None:
            self._open()
        assert self._executor is not None
        final, staging = _begin_sharded(run_dir, step, self.ctx)
        state = _sharded_state(model, optimizer)
        needed = _nbytes(state)
        with _saving(final, needed, staging if self.ctx.is_main else None):
            upload = dcp.async_save(
                state,
                checkpoint_id=str(staging),
                process_group=self._group,
                async_stager=self._stager,
                no_dist=self._group is None,
            )
        assert isinstance(upload, Future), type(upload)  # staged synchronously: one future
        done = self._executor.submit(
            self._finish, upload, run_dir, final, staging, needed, train_state, config, keep
        )
        self._in_flight = _InFlight(step, final, done)
        return final

    def _finish(
        self,
        upload: Future[Any],
        run_dir: Path,
        final: Path,
        staging: Path,
        needed: int,
        train_state: dict[str, Any],
        config: dict[str, Any],
        keep: int,
    ) -> None:
        """The background's second half: the record and the rename, then every rank learns
        whether any rank failed."""
        error: Exception | None = None
        try:
            with _saving(final, needed, staging if self.ctx.is_main else None):
                upload.result()  # DCP's save returns on every rank once all files are written
                if self.ctx.is_main:
                    _write_record(staging, train_state, config)
            if self.ctx.is_main:
                _put_in_place(run_dir, final, staging, keep=keep)
        except Exception as caught:
            error = caught
        if self._group is not None:
            outcome = None
            if error is not None:
                kind: type[BaseException] = type(error)
                try:
                    pickle.dumps(kind)
                except Exception:
                    kind = RuntimeError
                outcome = (kind, str(error))
            outcomes: list[Any] = [None] * dist.get_world_size(self._group)
            dist.all_gather_object(outcomes, outcome, group=self._group)
            if error is None:
                failed = next((o for o in outcomes if o is not None), None)
                if failed is not None:
                    raise _rebuilt(*failed)
        if error is not None:
            raise error

    def poll(self) -> CompletedCheckpoint | None:
        """The save in flight if it has completed (it is no longer in flight then), or None;
        raises its error."""
        if self._in_flight is None or not self._in_flight.done.done():
            return None
        return self.wait()

    def wait(self) -> CompletedCheckpoint | None:
        """Block until the save in flight is complete and return it (None when none is);
        raises its error, the same on every rank."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return None
        in_flight.done.result()
        return CompletedCheckpoint(in_flight.step, in_flight.path)

    def close(self) -> None:
        """Release the host copy, the thread and the process group (after :meth:`wait`);
        another :meth:`start` makes them again."""
        if self._in_flight is not None:
            raise RuntimeError(
                f"the save of step {self._in_flight.step} is in flight: wait() for it first"
            )
        if self._stager is not None:
            self._stager.close()
        if self._executor is not None:
            self._executor.shutdown()
        if self._group is not None and dist.is_initialized():
            dist.destroy_process_group(self._group)
        self._stager, self._executor, self._group = None, None, None
