"""Parallelism applied from outside the model: process groups, FSDP2, activation
checkpointing, ``torch.compile``, writing full tensors into shards, and which attention kernel
runs.

The model (``olmo_nn.model.OLMo``) knows nothing of any of this; the trainer calls these small
functions on it. On CPU everything runs on gloo in fp32 through the same code path.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.attention import SDPBackend

__all__ = [
    "DistributedContext",
    "apply_activation_checkpointing",
    "apply_compile",
    "apply_fsdp",
    "copy_into_shard",
    "describe_attention",
    "init_distributed",
    "join_one_rank_group",
    "sdpa_backend",
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


def join_one_rank_group(ctx: DistributedContext) -> DistributedContext:
    """A process group of this one process (NCCL on CUDA, gloo on CPU), for FSDP2 on one device.

    FSDP2 needs a process group even at world size 1; with one, a single GPU trains through
    the same sharding and mixed-precision policy as a multi-GPU run. ``ctx`` unchanged when
    a group already exists; several processes must come from torchrun instead.
    """
    if ctx.initialized:
        return ctx
    if ctx.world_size != 1:
        raise ValueError(
            f"join_one_rank_group is for a single process, not world size {ctx.world_size}; "
            "start several processes with torchrun"
        )
    cuda = ctx.device.type == "cuda"
    dist.init_process_group(
        "nccl" if cuda else "gloo",
        store=dist.HashStore(),
        rank=0,
        world_size=1,
        device_id=ctx.device if cuda else None,
    )
    return dataclasses.replace(ctx, initialized=True)


def apply_fsdp(
    model: nn.Module,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Shard ``model`` ZeRO-3 style with FSDP2: each block, then the root.

    Parameters stay fp32 (the master copy the optimizer updates); ``param_dtype`` (bf16 on
    GPU) is what forward/backward compute with; gradients are reduced in ``reduce_dtype``.
    The root casts its floating-point inputs (there are none: token ids, positions and masks
    are integers and bools); the blocks cast none of theirs, so the RoPE cos/sin the model
    hands every block stay fp32 (the hidden state already arrives in ``param_dtype``, from the
    embedding's cast weight). A model built on the meta device may be sharded first and
    materialized after (``to_empty``), each rank then holding only its shards.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    block_policy = dataclasses.replace(policy, cast_forward_inputs=False)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"apply_fsdp expects a model with .blocks, got {type(model).__name__}")
    for block in blocks:
        fully_shard(block, mp_policy=block_policy)
    fully_shard(model, mp_policy=policy)
    return model


@torch.no_grad()
def copy_into_shard(param: torch.Tensor, full: torch.Tensor) -> None:
    """Write ``full``, the whole tensor, into ``param``: all of it into a plain tensor, and
    into an FSDP2 ``DTensor`` only this rank's slice (uneven last shards included).

    No communication: every rank must hold the same ``full`` (drawn from the same seeded
    generator, or read from the same file), so that the shards together make ``full``.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    if tuple(full.shape) != tuple(param.shape):
        raise ValueError(f"a tensor of shape {tuple(full.shape)} cannot fill {tuple(param.shape)}")
    if isinstance(param, DTensor):
        # src_data_rank=None: each rank slices its own copy instead of receiving rank 0's.
        full = distribute_tensor(
            full.to(param.device), param.device_mesh, param.placements, src_data_rank=None
        )
    param.copy_(full)


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


#: How logs name each ``scaled_dot_product_attention`` backend.
_BACKEND_NAMES = {
    SDPBackend.FLASH_ATTENTION: "flash",
    SDPBackend.CUDNN_ATTENTION: "cuDNN",
    SDPBackend.EFFICIENT_ATTENTION: "memory-efficient",
    SDPBackend.MATH: "math",
    SDPBackend.OVERRIDEABLE: "overrideable",
    SDPBackend.ERROR: "none (no backend accepts these inputs)",
}


def sdpa_backend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> SDPBackend:
    """The backend ``F.scaled_dot_product_attention(q, k, v, ...)`` would run on these inputs.

    It honours the enabled backends, their priority and ``sdpa_kernel`` contexts, as the call
    itself does. Only the tensors' device, dtype, shape and strides matter, not their values.
    """
    # torch has no public "which backend" function: the public can_use_flash_attention &
    # co. each say whether one backend could run (and are CUDA-only), not which one SDPA
    # picks among them. _fused_sdp_choice is what SDPA itself dispatches on;
    # tests/olmo_nn/test_parallel.py pins its behaviour on CPU (and on CUDA, marked gpu).
    choice = torch._fused_sdp_choice(q, k, v, attn_mask, 0.0, is_causal)
    return SDPBackend(choice)


def describe_attention(
    n_heads: int,
    head_dim: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    seq_len: int,
) -> str:
    """One log line naming the backend of the model's causal attention in training, e.g.
    ``attention: SDPA flash, bf16, causal (cuda)``.

    The probe q, k, v are laid out as ``Block.attention`` makes them: heads split from the
    fused QKV projection (B, T, 3 d) and transposed to (B, n_heads, T, head_dim).
    """
    d = n_heads * head_dim
    qkv = torch.empty(batch_size, seq_len, 3 * d, device=device, dtype=dtype)
    q, k, v = (
        part.view(batch_size, seq_len, n_heads, head_dim).transpose(1, 2)
        for part in qkv.split(d, dim=-1)
    )
    backend = sdpa_backend(q, k, v, is_causal=True)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
    return (
        f"attention: SDPA {_BACKEND_NAMES.get(backend, backend.name)}, "
        f"{precision.get(dtype, str(dtype))}, causal ({device.type})"
    )
