"""The fast truncated-normal init gives exactly the values of ``nn.init.trunc_normal_``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.model import init as init_module


@pytest.mark.parametrize("shape", [(7,), (64, 33), (1000, 128), (50304, 16)])
@pytest.mark.parametrize(("std", "cutoff"), [(0.02, 3.0), (1.0, 2.0), (0.5, 0.2)])
def test_trunc_normal_matches_torch(shape: tuple[int, ...], std: float, cutoff: float) -> None:
    ours, theirs = torch.empty(shape), torch.empty(shape)
    g_ours, g_theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):  # the generators must also end in the same state
        init_module._trunc_normal(ours, std, cutoff, g_ours)
        nn.init.trunc_normal_(theirs, 0.0, std, -cutoff * std, cutoff * std, generator=g_theirs)
        assert torch.equal(ours, theirs)
    assert torch.equal(g_ours.get_state(), g_theirs.get_state())


def test_model_init_matches_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    config = TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128,
                               vocab_size=1000, embedding_size=1024, max_sequence_length=32,
                               eos_token_id=0, pad_token_id=1, weight_tying=False)  # fmt: skip
    fast = OLMo(config)
    fast.init_weights(seed=11)

    def reference(weight, std, cutoff, generator):  # type: ignore[no-untyped-def]
        nn.init.trunc_normal_(weight, 0.0, std, -cutoff * std, cutoff * std, generator=generator)

    monkeypatch.setattr(init_module, "_trunc_normal", reference)
    slow = OLMo(config)
    slow.init_weights(seed=11)
    for (name, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
