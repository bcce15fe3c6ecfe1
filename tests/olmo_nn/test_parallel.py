"""Which attention kernel SDPA picks, as the trainer logs it: pinned against the aten op
that actually runs (CPU here; the GPU test asserts flash or cuDNN in bf16 on CUDA)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from olmo_nn.parallel import describe_attention, sdpa_backend

#: The aten op scaled_dot_product_attention runs on CPU for each backend CPU has.
CPU_OPS = {
    SDPBackend.FLASH_ATTENTION: "aten::_scaled_dot_product_flash_attention_for_cpu",
    SDPBackend.MATH: "aten::_scaled_dot_product_attention_math",
}


def heads(dtype: torch.dtype, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """q, k, v (2, 4, 32, 16) laid out as the model makes them (split, then transposed)."""
    qkv = torch.randn(2, 32, 3 * 64, device=device).to(dtype)
    return tuple(p.view(2, 32, 4, 16).transpose(1, 2) for p in qkv.split(64, dim=-1))


def ops_run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_reported_cpu_backend_is_the_one_that_runs(dtype: torch.dtype) -> None:
    q, k, v = heads(dtype)
    backend = sdpa_backend(q, k, v, is_causal=True)
    assert backend == SDPBackend.FLASH_ATTENTION  # torch 2.13's CPU choice for causal attention
    assert CPU_OPS[backend] in ops_run(q, k, v)
    with sdpa_kernel(SDPBackend.MATH):  # what the report must follow when the choice changes
        assert sdpa_backend(q, k, v, is_causal=True) == SDPBackend.MATH
        ran = ops_run(q, k, v)
        assert CPU_OPS[SDPBackend.MATH] in ran and CPU_OPS[SDPBackend.FLASH_ATTENTION] not in ran


def test_describe_attention_on_cpu() -> None:
    cpu = torch.device("cpu")
    line = describe_attention(4, 16, device=cpu, dtype=torch.float32, batch_size=2, seq_len=63)
    assert line == "attention: SDPA flash, fp32, causal (cpu)"
    with sdpa_kernel(SDPBackend.MATH):
        line = describe_attention(4, 16, device=cpu, dtype=torch.bfloat16, batch_size=2, seq_len=63)
    assert line == "attention: SDPA math, bf16, causal (cpu)"


@pytest.mark.gpu
def test_bf16_attention_picks_flash_or_cudnn_on_cuda() -> None:
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("flash and cuDNN attention in bf16 need compute capability 8.0 or newer")
    cuda = torch.device("cuda")
    # OLMo-1B's attention: 16 heads of 128, 2047 tokens (an instance less its last token).
    line = describe_attention(
        16, 128, device=cuda, dtype=torch.bfloat16, batch_size=4, seq_len=2047
    )
    assert line in (
        "attention: SDPA flash, bf16, causal (cuda)",
        "attention: SDPA cuDNN, bf16, causal (cuda)",
    ), line
    q, k, v = heads(torch.bfloat16, "cuda")
    assert sdpa_backend(q, k, v, is_causal=True) in (
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
    )
    # fp32 has no flash kernel: the report must say something else.
    fp32 = describe_attention(16, 128, device=cuda, dtype=torch.float32, batch_size=4, seq_len=2047)
    assert "flash" not in fp32 and "fp32" in fp32, fp32
