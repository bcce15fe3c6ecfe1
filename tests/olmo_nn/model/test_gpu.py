"""On a GPU: bf16 autocast with flash attention stays close to the fp32 forward pass."""

from __future__ import annotations

import pytest
import torch

from olmo_nn.model import OLMo, TransformerConfig


@pytest.mark.gpu
def test_bf16_autocast_matches_fp32_on_cuda() -> None:
    config = TransformerConfig(d_model=256, n_heads=4, n_layers=2, max_sequence_length=512)
    model = OLMo(config, init_device="cuda").eval()
    ids = torch.randint(0, config.vocab_size, (2, 512), device="cuda")
    with torch.no_grad():
        reference = model(ids)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids)
    assert logits.dtype == torch.bfloat16
    # bf16 keeps ~3 significant digits; the logits here are O(1).
    error = (logits.float() - reference).abs()
    assert error.mean().item() < 0.02
    assert error.max().item() < 0.25
