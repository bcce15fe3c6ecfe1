"""On a GPU: bf16 attention through the flash kernel matches the math kernel and fp32."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from olmo_nn.model import OLMo, TransformerConfig

# The aten ops scaled_dot_product_attention dispatches to on CUDA for each backend.
FLASH_OP = "aten::_scaled_dot_product_flash_attention"
MATH_OP = "aten::_scaled_dot_product_attention_math"


def bf16_forward(
    model: OLMo, ids: torch.Tensor, backend: SDPBackend
) -> tuple[torch.Tensor, set[str]]:
    """Logits under bf16 autocast with only ``backend`` allowed, and the aten ops that ran."""
    with (
        torch.no_grad(),
        sdpa_kernel(backend),  # raises if that kernel cannot serve these inputs
        torch.autocast("cuda", dtype=torch.bfloat16),
        profile(activities=[ProfilerActivity.CPU]) as prof,
    ):
        logits = model(ids)
    return logits, {event.key for event in prof.key_averages()}


@pytest.mark.gpu
def test_bf16_flash_attention_matches_math_and_fp32_on_cuda() -> None:
    if not torch.backends.cuda.is_flash_attention_available():
        pytest.skip("this torch build has no flash attention kernel")
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("flash attention in bf16 needs compute capability 8.0 (Ampere) or newer")
    # head_dim 64 and a causal mask: a shape and mode the flash kernel supports.
    config = TransformerConfig(d_model=256, n_heads=4, n_layers=2, max_sequence_length=512)
    model = OLMo(config, init_device="cuda").eval()
    ids = torch.randint(0, config.vocab_size, (2, 512), device="cuda")
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        reference = model(ids)  # fp32
    flash, flash_ops = bf16_forward(model, ids, SDPBackend.FLASH_ATTENTION)
    math_logits, math_ops = bf16_forward(model, ids, SDPBackend.MATH)
    assert FLASH_OP in flash_ops and MATH_OP not in flash_ops, sorted(flash_ops)
    assert MATH_OP in math_ops and FLASH_OP not in math_ops, sorted(math_ops)
    assert flash.dtype == math_logits.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; the logits here are O(1).
    for other in (math_logits, reference):
        error = (flash.float() - other.float()).abs()
        assert error.mean().item() < 0.02
        assert error.max().item() < 0.25
