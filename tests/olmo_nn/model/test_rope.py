"""RoPE's cos/sin come from a table computed once per device, not per block and forward:
the values are the formula's bit for bit in fp32, the blocks compile without a graph break,
and q, k, v reach attention in bf16 under bf16 compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.model.transformer import RotaryEmbedding


def formula(head_dim: int, theta: float, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """cos and sin as each block computed them before the table: (..., T, head_dim)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (exponent / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def small() -> TransformerConfig:
    return TransformerConfig(d_model=64, n_heads=4, n_layers=3, mlp_hidden_size=128,
                             vocab_size=300, embedding_size=320, max_sequence_length=64,
                             eos_token_id=0, pad_token_id=1)  # fmt: skip


@pytest.mark.parametrize("head_dim", [16, 128])
def test_the_table_equals_the_formula_bit_for_bit(head_dim: int) -> None:
    rope = RotaryEmbedding(head_dim, 500000.0)
    generator = torch.Generator().manual_seed(0)
    # Short, then longer (the table grows), then shorter again (a slice of the longer table).
    for seq_len in (7, 2049, 300):
        cos, sin = rope.rotation(seq_len, torch.device("cpu"))
        expected = formula(head_dim, 500000.0, torch.arange(seq_len))
        assert cos.shape == sin.shape == (1, 1, seq_len, head_dim)
        assert cos.dtype == torch.float32
        assert torch.equal(cos[0, 0], expected[0]) and torch.equal(sin[0, 0], expected[1])
        # Packed rows: positions restart within a row, and may exceed the row's length.
        positions = torch.randint(0, 3000, (3, seq_len), generator=generator)
        cos, sin = rope.rotation(seq_len, torch.device("cpu"), positions)
        expected = formula(head_dim, 500000.0, positions)
        assert cos.shape == (3, 1, seq_len, head_dim)
        assert torch.equal(cos[:, 0], expected[0]) and torch.equal(sin[:, 0], expected[1])
    assert rope._tables[torch.device("cpu")][0].shape[0] >= 3000  # covers the largest position


def test_negative_positions_are_refused() -> None:
    with pytest.raises(ValueError, match="position_ids must be >= 0, got -1"):
        RotaryEmbedding(8, 10000.0).rotation(2, torch.device("cpu"), torch.tensor([[-1, 0]]))


def test_the_model_computes_rope_once_and_matches_the_formula(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = small()
    model = OLMo(config).eval()
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(1))
    positions = torch.tensor([list(range(12)) + list(range(8)), list(range(20))])
    calls: list[tuple[int, ...]] = []
    compute = RotaryEmbedding._cos_sin

    def counted(self: RotaryEmbedding, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(tuple(where.shape))
        return compute(self, where)

    monkeypatch.setattr(RotaryEmbedding, "_cos_sin", counted)
    with torch.no_grad():
        cached = model(ids)
        cached_packed = model(ids, position_ids=positions)
    assert calls == [(20,)]  # one table for three blocks and two forwards

    def per_call(
        self: RotaryEmbedding, seq_len: int, device: torch.device, where: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if where is None:
            cos, sin = formula(self.head_dim, self.theta, torch.arange(seq_len))
            return cos[None, None], sin[None, None]
        cos, sin = formula(self.head_dim, self.theta, where)
        return cos[:, None], sin[:, None]

    monkeypatch.setattr(RotaryEmbedding, "rotation", per_call)
    with torch.no_grad():
        assert torch.equal(cached, model(ids))
        assert torch.equal(cached_packed, model(ids, position_ids=positions))
        assert not torch.equal(cached_packed, cached)  # the positions did change the output


def test_blocks_compile_whole_with_the_rope_tensors_handed_in() -> None:
    config = small()
    model = OLMo(config).eval()
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        eager = model(ids)
        for block in model.blocks:
            block.compile(fullgraph=True, backend="eager")  # a graph break raises
        compiled = model(ids)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["autocast", "bf16 parameters"])
def test_q_k_v_reach_attention_in_bf16(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 autocast (one process) or bf16 parameters (FSDP's mixed precision) the
    attention kernel gets bf16 inputs, the precondition of the GPU's flash/cuDNN kernels."""
    model = OLMo(small()).eval()
    seen: list[tuple[torch.dtype, ...]] = []
    attention = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
        seen.append((q.dtype, k.dtype, v.dtype))
        return attention(q, k, v, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    ids = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        if how == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(ids)
        else:
            model.to(torch.bfloat16)(ids)
    assert seen == [(torch.bfloat16,) * 3] * 3
