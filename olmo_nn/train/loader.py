"""The training loader: each step's micro-batches for one rank, in the data order.

:class:`BatchLoader` walks the steps from a given position (instances consumed), asks
``batch_size_at(step)`` for each global batch's size, takes the global batch from the
:class:`~olmo_nn.train.data_order.DataOrder`, keeps this rank's strided slice and cuts it
into micro-batches. Worker processes (``num_workers > 0``) only read ahead: each step is
read whole by one worker and steps come back in order, so the content is the same for any
number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from olmo_nn.train.data_order import (
    DataOrder,
    InstanceSpace,
    batch_fingerprint,
    check_batch_divisibility,
    rank_slice,
)

__all__ = ["BatchLoader", "StepBatch"]


@dataclass(frozen=True)
class StepBatch:
    """One optimizer step's data for one rank."""

    step: int
    """The optimizer step (1-based)."""
    start: int
    """Instances consumed before this step: the global batch's first position."""
    end: int
    """Instances consumed after this step: store it in the checkpoint to resume."""
    global_indices: np.ndarray
    """The global batch's instance indices, in order (the same on every rank)."""
    micro_batches: list[torch.Tensor]
    """This rank's instances: int64 tensors of shape (micro_batch_size, sequence_length)."""
    epoch: int
    """Epoch of the batch's first instance."""
    last_epoch: int
    """Epoch of its last instance (one more than ``epoch`` when it spans a boundary)."""
    fingerprint: str | None
    """:func:`~olmo_nn.train.data_order.batch_fingerprint` of the global batch, if requested."""

    @property
    def size(self) -> int:
        """Instances in the global batch."""
        return self.end - self.start

    @property
    def num_tokens(self) -> int:
        """Tokens in the global batch."""
        return int(self.micro_batches[0].shape[1]) * self.size if self.micro_batches else 0


@dataclass(frozen=True)
class _StepPlan:
    step: int
    start: int
    size: int


class _StepReader(Dataset[dict[str, Any]]):
    """Reads one step for one rank; the same object runs in-process or in a worker."""

    def __init__(
        self,
        space: InstanceSpace,
        order: DataOrder,
        rank: int,
        world_size: int,
        compute_fingerprint: bool,
    ) -> None:
        self.space = space
        self.order = order
        self.rank = rank
        self.world_size = world_size
        self.compute_fingerprint = compute_fingerprint

    def __getitem__(self, plan: _StepPlan) -> dict[str, Any]:
        indices = self.order.global_indices(plan.start, plan.size)
        mine = rank_slice(indices, self.rank, self.world_size)
        if self.compute_fingerprint:
            # The whole global batch is read anyway for the hash; take this rank's rows from it.
            tokens = self.space.tokens(indices)
            fingerprint: str | None = batch_fingerprint(tokens)
            rank_tokens = np.ascontiguousarray(tokens[self.rank :: self.world_size])
        else:
            rank_tokens = self.space.tokens(mine)
            fingerprint = None
        return {
            "plan": plan,
            "indices": indices,
            "tokens": torch.from_numpy(rank_tokens),
            "fingerprint": fingerprint,
        }

    def __len__(self) -> int:
        raise TypeError("the step reader has no length: steps are planned by the loader")


def _identity(item: Any) -> Any:
    """The collate function: each loader item is already one whole step."""
    return item


class BatchLoader:
    """Iterate :class:`StepBatch` es for ``rank`` of ``world_size`` from ``start_step``.

    ``start_position`` is the instances consumed before ``start_step`` (0 for a fresh run,
    the checkpoint's :attr:`position` when resuming). ``batch_size_at(step)`` gives each
    step's global batch size, which must divide by ``micro_batch_size * world_size``.
    Iteration stops after ``stop_step`` (inclusive) or never. ``num_workers`` processes
    read up to ``prefetch`` steps each ahead; the batches are identical for any count.
    After each yielded step, :attr:`step` and :attr:`position` describe what has been
    handed out (:meth:`state_dict`).
    """

    def __init__(
        self,
        space: InstanceSpace,
        order: DataOrder,
        *,
        batch_size_at: Callable[[int], int],
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 1,
        start_position: int = 0,
        stop_step: int | None = None,
        num_workers: int = 0,
        prefetch: int = 2,
        compute_fingerprint: bool = False,
    ) -> None:
        if order.num_instances != len(space):
            raise ValueError(
                f"the data order covers {order.num_instances} instances but the instance "
                f"space holds {len(space)}; build the order from this space"
            )
        if not 0 <= rank < world_size:
            raise ValueError(
                f"rank={rank} must be in 0..{world_size - 1} (world_size={world_size})"
            )
        if micro_batch_size <= 0:
            raise ValueError(f"micro_batch_size={micro_batch_size} must be positive")
        if start_step < 1 or start_position < 0:
            raise ValueError(
                f"start_step={start_step} must be >= 1 and start_position={start_position} >= 0"
            )
        if num_workers < 0 or prefetch < 1:
            raise ValueError(f"num_workers={num_workers} must be >= 0 and prefetch={prefetch} >= 1")
        self.space = space
        self.order = order
        self.batch_size_at = batch_size_at
        self.micro_batch_size = micro_batch_size
        self.rank = rank
        self.world_size = world_size
        self.stop_step = stop_step
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.compute_fingerprint = compute_fingerprint
        #: The last step handed out (``start_step - 1`` before the first).
        self.step = start_step - 1
        #: Instances consumed after :attr:`step`.
        self.position = start_position

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint stores to resume: the last step and the position after it."""
        return {"step": self.step, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after ``state["step"]`` at ``state["position"]`` (call before iterating)."""
        self.step = int(state["step"])
        self.position = int(state["position"])

    def _plan(self) -> Iterator[_StepPlan]:
        step, position = self.step + 1, self.position
        while self.stop_step is None or step <= self.stop_step:
            size = self.batch_size_at(step)
            check_batch_divisibility(size, self.micro_batch_size, self.world_size)
            yield _StepPlan(step=step, start=position, size=size)
            step, position = step + 1, position + size

    def __iter__(self) -> Iterator[StepBatch]:
        reader = _StepReader(
            self.space, self.order, self.rank, self.world_size, self.compute_fingerprint
        )
        items: Iterator[dict[str, Any]]
        if self.num_workers == 0:
            items = (reader[plan] for plan in self._plan())
        else:
            items = iter(
                DataLoader(
                    reader,
                    sampler=self._plan(),
                    batch_size=None,
                    collate_fn=_identity,
                    num_workers=self.num_workers,
                    prefetch_factor=self.prefetch,
                    persistent_workers=False,
                )
            )
        for item in items:
            plan: _StepPlan = item["plan"]
            tokens: torch.Tensor = item["tokens"]
            end = plan.start + plan.size
            batch = StepBatch(
                step=plan.step,
                start=plan.start,
                end=end,
                global_indices=item["indices"],
                micro_batches=list(torch.split(tokens, self.micro_batch_size)),
                epoch=self.order.epoch_of(plan.start),
                last_epoch=self.order.epoch_of(end - 1),
                fingerprint=item["fingerprint"],
            )
            self.step, self.position = plan.step, end
            yield batch
