"""Forward-pass behaviour of the OLMo module, checked against hand-written references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.model.transformer import Block, Norm, RotaryEmbedding


def small(**changes: object) -> TransformerConfig:
    base = TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=96,
                             vocab_size=300, embedding_size=320, eos_token_id=0, pad_token_id=1)  # fmt: skip
    return base.replace(**changes) if changes else base


def blocks(model: OLMo) -> list[Block]:
    """The model's blocks, typed (``nn.ModuleList`` items are plain modules to mypy)."""
    found = [block for block in model.blocks if isinstance(block, Block)]
    assert len(found) == len(model.blocks)
    return found


def test_logits_shape_and_causality() -> None:
    model = OLMo(small()).eval()
    ids = torch.randint(0, 300, (2, 12))
    logits = model(ids)
    assert logits.shape == (2, 12, 320)
    changed = ids.clone()
    changed[:, 8:] = torch.randint(0, 300, (2, 4))
    torch.testing.assert_close(model(changed)[:, :8], logits[:, :8], rtol=0, atol=0)


def test_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, seq\)"):
        OLMo(small())(torch.zeros(5, dtype=torch.long))


def reference_forward(model: OLMo, ids: torch.Tensor) -> torch.Tensor:
    """OLMo 1 written out by hand: pre-norm, non-affine LayerNorm, RoPE, SwiGLU (gate second)."""
    c = model.config
    h = model.embeddings.weight[ids]
    seq = ids.shape[1]
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
    angles = torch.outer(torch.arange(seq).float(), inv)
    cos, sin = angles.cos(), angles.sin()

    def rope(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, D), rotate-half convention
        a, b = x[..., : c.head_dim // 2], x[..., c.head_dim // 2 :]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

    for block in blocks(model):
        x = F.layer_norm(h, (c.d_model,), eps=c.norm_eps)
        q, k, v = (x @ block.att_proj.weight.T).split(c.d_model, dim=-1)
        q, k, v = (t.view(*t.shape[:2], c.n_heads, c.head_dim).transpose(1, 2) for t in (q, k, v))
        q, k = rope(q), rope(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_dim)
        scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(*h.shape)
        h = h + attn @ block.attn_out.weight.T
        x = F.layer_norm(h, (c.d_model,), eps=c.norm_eps)
        up = x @ block.ff_proj.weight[: c.hidden_size].T
        gate = x @ block.ff_proj.weight[c.hidden_size :].T
        h = h + (F.silu(gate) * up) @ block.ff_out.weight.T
    h = F.layer_norm(h, (c.d_model,), eps=c.norm_eps)
    return h @ model.output_weight().T


@pytest.mark.parametrize("tied", [True, False])
def test_matches_hand_written_olmo1(tied: bool) -> None:
    model = OLMo(small(weight_tying=tied)).eval()
    ids = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference_forward(model, ids), rtol=1e-5, atol=1e-5)


def test_rmsnorm_and_layernorm_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    rms = Norm(4, norm_type="rmsnorm", affine=True, eps=0.0)
    with torch.no_grad():
        rms.weight.copy_(torch.tensor([1.0, 2.0, 1.0, 0.5]))  # type: ignore[union-attr]
    expected = x / math.sqrt((1 + 4 + 9 + 36) / 4) * torch.tensor([1.0, 2.0, 1.0, 0.5])
    torch.testing.assert_close(rms(x), expected)
    ln = Norm(4, norm_type="layernorm", affine=False, eps=0.0)
    centered = x - 3.0
    torch.testing.assert_close(ln(x), centered / math.sqrt((4 + 1 + 0 + 9) / 4))
    assert ln.weight is None


def test_norms_and_rope_run_in_fp32_under_bf16_autocast() -> None:
    x = torch.randn(2, 5, 64) * 30 + 7
    norm = Norm(64, norm_type="layernorm", affine=False, eps=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x.to(torch.bfloat16))
    expected = F.layer_norm(x.to(torch.bfloat16).float(), (64,), eps=1e-5).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

    rope = RotaryEmbedding(16, 10000.0)
    q = torch.randn(1, 2, 300, 16).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_rot, _ = rope(q, q)
    q_ref, _ = rope(q.float(), q.float())
    torch.testing.assert_close(q_rot, q_ref.to(torch.bfloat16), rtol=0, atol=0)


def test_rope_depends_only_on_relative_position() -> None:
    rope = RotaryEmbedding(8, 10000.0)
    q = torch.randn(1, 1, 1, 8).expand(1, 1, 40, 8)
    k = torch.randn(1, 1, 1, 8).expand(1, 1, 40, 8)
    q_rot, k_rot = rope(q.contiguous(), k.contiguous())
    scores = q_rot[0, 0] @ k_rot[0, 0].T  # (40, 40)
    torch.testing.assert_close(scores[10, 3], scores[30, 23], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1), rtol=1e-5, atol=1e-5)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm written out: x / sqrt(mean(x^2) + eps), times a per-channel weight."""
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def reference_olmo2_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """OLMo 2's block by hand: RMSNorm on the full q and k projections (QK-norm) before RoPE,
    and post-norm, i.e. each sublayer's output is normalized before its residual add."""
    c = block.config
    batch, seq, d = x.shape
    weight = {name: p.detach() for name, p in block.named_parameters()}
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2).float() / c.head_dim))
    angles = torch.outer(torch.arange(seq).float(), inv)
    cos, sin = angles.cos(), angles.sin()

    def rope(t: torch.Tensor) -> torch.Tensor:  # (B, H, T, D), rotate-half convention
        a, b = t[..., : c.head_dim // 2], t[..., c.head_dim // 2 :]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, seq, c.n_heads, c.head_dim).transpose(1, 2)

    q, k, v = (x @ weight["att_proj.weight"].T).split(d, dim=-1)
    q = rms_norm(q, weight["q_norm.weight"], c.norm_eps)  # over all d channels, not per head
    k = rms_norm(k, weight["k_norm.weight"], c.norm_eps)
    q, k, v = rope(heads(q)), rope(heads(k)), heads(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_dim)
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, d)
    h = x + rms_norm(attn @ weight["attn_out.weight"].T, weight["attn_norm.weight"], c.norm_eps)
    up = h @ weight["ff_proj.weight"][: c.hidden_size].T
    gate = h @ weight["ff_proj.weight"][c.hidden_size :].T
    mlp = (F.silu(gate) * up) @ weight["ff_out.weight"].T
    return h + rms_norm(mlp, weight["ff_norm.weight"], c.norm_eps)


def test_olmo2_block_is_post_norm_with_qk_norm() -> None:
    config = small().as_olmo2()
    model = OLMo(config).eval()
    assert model.lm_head is not None
    block = blocks(model)[0]
    assert block.q_norm is not None and block.k_norm is not None
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        # The norm weights start at 1 and OLMo 2's init_std of 0.02 makes tiny projections:
        # draw every weight afresh so that each norm, and its weight, changes the output.
        for name, param in block.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(torch.empty_like(param).uniform_(0.5, 1.5, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(64))
    x = torch.randn(2, 6, 64, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_olmo2_block(block, x), rtol=1e-5, atol=1e-5)


def test_clip_qkv_bounds_the_projection() -> None:
    model = OLMo(small(clip_qkv=0.05)).eval()
    seen = []
    block = blocks(model)[0]
    block.att_proj.register_forward_hook(lambda _m, _i, out: seen.append(out.abs().max().item()))
    model(torch.randint(0, 300, (1, 8)))
    assert seen[0] > 0.05  # the raw projection exceeds the bound, so clamping is exercised
    unclipped = OLMo(small()).eval()
    unclipped.load_state_dict(model.state_dict())
    assert not torch.equal(
        unclipped(torch.ones(1, 4, dtype=torch.long)), model(torch.ones(1, 4, dtype=torch.long))
    )


def test_mitchell_init_statistics() -> None:
    config = TransformerConfig(d_model=256, n_heads=4, n_layers=3, mlp_hidden_size=512)
    model = OLMo(config, init_device="meta")
    model.to_empty(device="cpu")
    model.init_weights(seed=7)
    d, hidden = 256, 512
    checks = {
        model.embeddings.weight: 1 / math.sqrt(d),
        blocks(model)[0].att_proj.weight: 1 / math.sqrt(d),
        blocks(model)[2].attn_out.weight: 1 / math.sqrt(2 * d * 3),
        blocks(model)[1].ff_out.weight: 1 / math.sqrt(2 * hidden * 2),
    }
    for weight, std in checks.items():
        assert weight.abs().max().item() <= 3 * std + 1e-7  # truncated at 3 sigma
        # A normal truncated at 3 sigma has std 0.9866 sigma.
        assert weight.std().item() == pytest.approx(0.9866 * std, rel=0.03)
    again = OLMo(config, init_device="meta")
    again.to_empty(device="cpu")
    again.init_weights(seed=7)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
