"""The batch loader: same global batches for any world size and worker count; exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from olmo_nn.data import ShardWriter
from olmo_nn.train.batch import BatchSchedule
from olmo_nn.train.data_order import DataOrder, InstanceSpace, batch_fingerprint
from olmo_nn.train.loader import BatchLoader, StepBatch

SEQ = 4
NUM_INSTANCES = 40


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> InstanceSpace:
    """40 instances in two folders; instance k is [k+1, k+1, k+1, EOS], so row[0] - 1 = k."""
    folders = []
    for number, ids in enumerate((range(0, 25), range(25, NUM_INSTANCES))):
        folder = tmp_path_factory.mktemp(f"shards{number}")
        with ShardWriter(folder, vocab_size=1000, eos_token_id=0) as writer:
            for k in ids:
                writer.write([k + 1] * 3, id=f"doc{k}", source="s")
        folders.append(str(folder))
    return InstanceSpace(folders, SEQ)


def instances_of(tokens: torch.Tensor) -> list[int]:
    return (tokens[:, 0] - 1).tolist()


def take(loader: BatchLoader, num_steps: int) -> list[StepBatch]:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == num_steps:
            break
    return batches


def global_batches(space: InstanceSpace, world_size: int, num_workers: int) -> list[list[int]]:
    """Each step's instances reassembled from every rank's micro-batches."""
    order = DataOrder(len(space), seed=5)
    per_rank = []
    for rank in range(world_size):
        loader = BatchLoader(
            space,
            order,
            batch_size_at=lambda step: 8,
            micro_batch_size=2 if world_size < 4 else 1,
            rank=rank,
            world_size=world_size,
            stop_step=7,
            num_workers=num_workers,
        )
        per_rank.append(list(loader))
    steps = []
    for step_batches in zip(*per_rank, strict=True):
        merged = np.empty(8, dtype=np.int64)
        for rank, batch in enumerate(step_batches):
            assert all(m.dtype == torch.int64 and m.shape[1] == SEQ for m in batch.micro_batches)
            merged[rank::world_size] = instances_of(torch.cat(batch.micro_batches))
        steps.append(merged.tolist())
    return steps


def test_global_batches_do_not_depend_on_world_size_or_workers(space: InstanceSpace) -> None:
    order = DataOrder(len(space), seed=5)
    expected = [order.global_indices(8 * k, 8).tolist() for k in range(7)]
    # 7 steps of 8 cross the epoch boundary at position 40.
    for world_size in (1, 2, 4):
        assert global_batches(space, world_size, num_workers=0) == expected
    assert global_batches(space, 2, num_workers=2) == expected


def test_step_metadata_and_epoch_rollover(space: InstanceSpace) -> None:
    order = DataOrder(len(space), seed=5)
    loader = BatchLoader(
        space, order, batch_size_at=lambda step: 16, micro_batch_size=4, stop_step=4
    )
    batches = list(loader)
    assert [(b.step, b.start, b.end) for b in batches] == [
        (1, 0, 16),
        (2, 16, 32),
        (3, 32, 48),
        (4, 48, 64),
    ]
    assert [(b.epoch, b.last_epoch) for b in batches] == [(0, 0), (0, 0), (0, 1), (1, 1)]
    assert [len(b.micro_batches) for b in batches] == [4, 4, 4, 4]
    assert batches[0].size == 16 and batches[0].num_tokens == 64
    assert batches[2].global_indices.tolist() == order.global_indices(32, 16).tolist()
    assert loader.state_dict() == {"step": 4, "position": 64}


def test_resume_from_a_middle_position_equals_continuing(space: InstanceSpace) -> None:
    schedule = BatchSchedule(
        global_batch_size=8,
        sequence_length=SEQ,
        warmup_start_instances=2,
        warmup_doubling_tokens=24,
    )
    order = DataOrder(len(space), seed=9)
    straight = list(
        BatchLoader(space, order, batch_size_at=schedule.size, micro_batch_size=2, stop_step=9)
    )
    assert [b.size for b in straight] == [2, 2, 2, 4, 4, 8, 8, 8, 8]
    assert [b.start for b in straight] == [schedule.start(b.step) for b in straight]

    first = BatchLoader(space, order, batch_size_at=schedule.size, micro_batch_size=2, stop_step=9)
    take(first, 4)
    state = first.state_dict()
    assert state == {"step": 4, "position": 10}
    # A fresh process: new order object, loader restored from the checkpoint's state.
    resumed = BatchLoader(
        space,
        DataOrder(len(space), seed=9),
        batch_size_at=schedule.size,
        micro_batch_size=2,
        stop_step=9,
        num_workers=2,
    )
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [b.step for b in rest] == [5, 6, 7, 8, 9]
    for a, b in zip(straight[4:], rest, strict=True):
        assert (a.start, a.end) == (b.start, b.end)
        assert all(torch.equal(x, y) for x, y in zip(a.micro_batches, b.micro_batches, strict=True))
    same = BatchLoader(
        space,
        order,
        batch_size_at=schedule.size,
        micro_batch_size=2,
        start_step=5,
        start_position=10,
    )
    assert [b.global_indices.tolist() for b in take(same, 5)] == [
        b.global_indices.tolist() for b in rest
    ]


def test_fingerprint_is_the_global_batchs_on_every_rank(space: InstanceSpace) -> None:
    order = DataOrder(len(space), seed=1)
    fingerprints = []
    for rank in range(2):
        loader = BatchLoader(
            space,
            order,
            batch_size_at=lambda step: 8,
            micro_batch_size=4,
            rank=rank,
            world_size=2,
            compute_fingerprint=True,
        )
        (batch,) = take(loader, 1)
        fingerprints.append(batch.fingerprint)
        assert instances_of(batch.micro_batches[0]) == order.global_indices(0, 8)[rank::2].tolist()
    expected = batch_fingerprint(space.tokens(order.global_indices(0, 8)))
    assert fingerprints == [expected, expected]
    (plain,) = take(BatchLoader(space, order, batch_size_at=lambda s: 8, micro_batch_size=4), 1)
    assert plain.fingerprint is None


def test_indivisible_batches_and_bad_arguments_are_refused(space: InstanceSpace) -> None:
    order = DataOrder(len(space), seed=1)
    loader = BatchLoader(
        space, order, batch_size_at=lambda step: 6, micro_batch_size=2, rank=0, world_size=2
    )
    with pytest.raises(
        ValueError,
        match=r"global batch of 6 instances is not divisible by micro_batch_size=2 x world_size=2 \(= 4\)",
    ):
        next(iter(loader))
    with pytest.raises(ValueError, match="covers 7 instances but the instance space holds 40"):
        BatchLoader(space, DataOrder(7, seed=1), batch_size_at=lambda s: 8, micro_batch_size=2)
    with pytest.raises(ValueError, match=r"rank=2 must be in 0\.\.1"):
        BatchLoader(
            space, order, batch_size_at=lambda s: 8, micro_batch_size=2, rank=2, world_size=2
        )


def test_instances_match_the_shards(space: InstanceSpace) -> None:
    order = DataOrder(len(space), seed=2)
    (batch,) = take(BatchLoader(space, order, batch_size_at=lambda s: 4, micro_batch_size=4), 1)
    expected = [[k + 1, k + 1, k + 1, 0] for k in order.global_indices(0, 4).tolist()]
    assert batch.micro_batches[0].tolist() == expected
