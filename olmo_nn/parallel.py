"""Parallelism applied from outside the model: process groups, FSDP2, activation
checkpointing and ``torch.compile``.

The model (``olmo_nn.model.OLMo``) knows nothing of any of this; the trainer calls these small
functions on it. On CPU everything runs on gloo in fp32 through the same code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "apply_activation_checkpointing",
    "apply_compile",
    "apply_fsdp",
    "init_distributed",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: rank, world size and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            dist.barrier()

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (a no-op in a single process)."""
        if not self.initialized or self.world_size == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, ...), if any.

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``. CPU uses gloo,
    CUDA uses NCCL. Without torchrun's variables this is a single, uninitialized process.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu' or 'cuda'")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA device is visible")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    initialized = dist.is_initialized()
    if world_size > 1 and not initialized:
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", device_id=target if use_cuda else None
        )
        initialized = True
    return DistributedContext(rank, world_size, local_rank, target, initialized)


def apply_fsdp(
    model: nn.Module,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Shard ``model`` ZeRO-3 style with FSDP2: each block, then the root.

    Parameters stay fp32 (the master copy the optimizer updates); ``param_dtype`` (bf16 on
    GPU) is what forward/backward compute with; gradients are reduced in ``reduce_dtype``.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"apply_fsdp expects a model with .blocks, got {type(model).__name__}")
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each block's activations in backward instead of storing them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError("apply_activation_checkpointing expects a model with a .blocks ModuleList")
    for i, block in enumerate(blocks):
        blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    return model


def apply_compile(model: nn.Module) -> nn.Module:
    """Compile each block separately (fast to compile, and composes with FSDP2 per block)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError("apply_compile expects a model with .blocks")
    for block in blocks:
        block.compile(fullgraph=True)
    return model
