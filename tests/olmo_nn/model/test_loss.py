"""The chunked cross-entropy and z-loss against autograd over the full logits."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.model.loss import lm_loss
from olmo_nn.train.stability import z_loss

TOKENS = (3, 7)  # 21 tokens
D_MODEL, VOCAB = 16, 50


def reference(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, coef: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What the trainer computed before: full logits, upcast, F.cross_entropy and z_loss."""
    logits = F.linear(hidden, weight).float()
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    if coef is None:
        return ce, ce, None
    zl = z_loss(logits)
    return ce + coef * zl, ce, zl


def inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(*TOKENS, D_MODEL, generator=generator, dtype=dtype)
    weight = 0.5 * torch.randn(VOCAB, D_MODEL, generator=generator, dtype=dtype)
    targets = torch.randint(0, VOCAB, TOKENS, generator=generator)
    return hidden.requires_grad_(), weight.requires_grad_(), targets


def grads_of(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def assert_grads_close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    """Elementwise within ``rel`` of the largest entry (relative-ish: entries near 0 vary)."""
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * scale)


# 5 does not divide the 21 tokens; 21 is one chunk; 1 is a chunk per token; 64 exceeds them
@pytest.mark.parametrize("chunk_tokens", [1, 5, 21, 64])
@pytest.mark.parametrize("coef", [None, 1e-2])
def test_values_and_grads_equal_autograd_over_full_logits_in_fp32(
    chunk_tokens: int, coef: float | None
) -> None:
    hidden, weight, targets = inputs()
    out = lm_loss(hidden, weight, targets, z_loss_coef=coef, chunk_tokens=chunk_tokens)
    want_loss, want_ce, want_z = reference(hidden, weight, targets, coef)
    assert out.loss.dtype == out.ce.dtype == torch.float32
    assert out.ce.item() == pytest.approx(want_ce.item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    if coef is None:
        assert out.z_loss is None
    else:
        assert out.z_loss is not None and want_z is not None
        assert out.z_loss.item() == pytest.approx(want_z.item(), rel=1e-6)
    # a scaled loss (the trainer divides by the number of micro-batches) scales the grads
    got = grads_of(out.loss / 3, hidden, weight)
    want = grads_of(want_loss / 3, hidden, weight)
    for g, w in zip(got, want, strict=True):
        assert_grads_close(g, w, rel=1e-6)


@pytest.mark.parametrize("coef", [None, 1e-2])
def test_fp64_matches_to_rounding(coef: float | None) -> None:
    """In fp64 the math itself is checked: nothing differs but summation order."""
    hidden, weight, targets = inputs(torch.float64)
    out = lm_loss(hidden, weight, targets, z_loss_coef=coef, chunk_tokens=4)
    logits = F.linear(hidden, weight)
    want = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    if coef is not None:
        want = want + coef * torch.logsumexp(logits, -1).square().mean()
    assert out.loss.dtype == torch.float64
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-13)
    for g, w in zip(
        grads_of(out.loss, hidden, weight), grads_of(want, hidden, weight), strict=True
    ):
        assert_grads_close(g, w, rel=1e-12)


def test_z_loss_term_has_the_right_gradient() -> None:
    """The z-loss's share of the gradient alone (a large coefficient makes it dominate)."""
    hidden, weight, targets = inputs(torch.float64)
    with_z = lm_loss(hidden, weight, targets, z_loss_coef=10.0, chunk_tokens=4).loss
    without = lm_loss(hidden, weight, targets, chunk_tokens=4).loss
    got = [a - b for a, b in zip(grads_of(with_z, hidden), grads_of(without, hidden), strict=True)]
    log_z = torch.logsumexp(F.linear(hidden, weight), -1)
    (want,) = grads_of(10.0 * log_z.square().mean(), hidden)
    assert_grads_close(got[0], want, rel=1e-12)


def test_bf16_autocast_is_close_to_autograd_under_the_same_autocast() -> None:
    hidden, weight, targets = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lm_loss(hidden, weight, targets, z_loss_coef=1e-2, chunk_tokens=5)
        logits = F.linear(hidden, weight)
    assert logits.dtype == torch.bfloat16  # the reference really ran in bf16
    logits = logits.float()
    want = F.cross_entropy(logits.flatten(0, 1), targets.flatten()) + 1e-2 * z_loss(logits)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-3)
    got = grads_of(out.loss, hidden, weight)
    expected = grads_of(want, hidden, weight)
    for g, w in zip(got, expected, strict=True):
        assert g.dtype == torch.float32  # the inputs' dtype, as autograd returns
        assert_grads_close(g, w, rel=2e-2)
    fp32 = lm_loss(hidden, weight, targets, z_loss_coef=1e-2, chunk_tokens=5).loss
    assert out.loss.item() != fp32.item()  # and it was not fp32 in disguise


def test_bf16_inputs_give_bf16_grads_and_fp32_losses() -> None:
    """FSDP2's mixed precision hands the loss bf16 hidden states and a bf16 weight."""
    hidden, weight, targets = (t.detach() for t in inputs())
    hidden_bf16 = hidden.bfloat16().requires_grad_()
    weight_bf16 = weight.bfloat16().requires_grad_()
    out = lm_loss(hidden_bf16, weight_bf16, targets, z_loss_coef=1e-2, chunk_tokens=5)
    assert out.loss.dtype == torch.float32
    want, _, _ = reference(hidden_bf16.float(), weight_bf16.float(), targets, 1e-2)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-3)
    grad_h, grad_w = grads_of(out.loss, hidden_bf16, weight_bf16)
    assert grad_h.dtype == grad_w.dtype == torch.bfloat16


def test_no_grad_computes_values_only() -> None:
    hidden, weight, targets = inputs()
    with torch.no_grad():
        out = lm_loss(hidden, weight, targets, z_loss_coef=1e-2, chunk_tokens=5)
    assert not out.loss.requires_grad
    want, _, _ = reference(hidden, weight, targets, 1e-2)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_only_loss_is_differentiable_and_backward_can_repeat() -> None:
    hidden, weight, targets = inputs()
    out = lm_loss(hidden, weight, targets, z_loss_coef=1e-2, chunk_tokens=5)
    assert out.loss.requires_grad
    assert out.z_loss is not None
    assert not out.ce.requires_grad and not out.z_loss.requires_grad
    out.loss.backward(retain_graph=True)
    assert hidden.grad is not None and weight.grad is not None
    once = (hidden.grad.clone(), weight.grad.clone())
    out.loss.backward()  # the saved gradients are scaled, never overwritten
    torch.testing.assert_close(hidden.grad, 2 * once[0])
    torch.testing.assert_close(weight.grad, 2 * once[1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"targets": torch.zeros(3, 6, dtype=torch.long)}, "targets shape"),
        ({"targets": torch.zeros(3, 7)}, "integer token ids"),
        ({"weight": torch.zeros(VOCAB, D_MODEL + 1)}, "must be \\(vocabulary, 16\\)"),
        ({"chunk_tokens": 0}, "chunk_tokens=0 must be at least 1"),
        ({"z_loss_coef": -1.0}, "z_loss_coef=-1.0 must be >= 0"),
    ],
)
def test_bad_arguments_are_refused(change: dict[str, Any], message: str) -> None:
    hidden, weight, targets = inputs()
    kwargs: dict[str, Any] = {"hidden": hidden, "weight": weight, "targets": targets, **change}
    with pytest.raises(ValueError, match=message):
        lm_loss(**kwargs)


# ------------------------------------------------------------------------------------ memory


class LargestTensor(TorchDispatchMode):
    """Records the element count of every tensor any operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        outputs = result if isinstance(result, (tuple, list)) else (result,)
        for output in outputs:
            if isinstance(output, torch.Tensor):
                self.largest = max(self.largest, output.numel())
        return result


def test_no_tensor_of_tokens_times_vocabulary_is_ever_made() -> None:
    tokens, vocab, chunk = 64, 1000, 16
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, tokens // 4, 8, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, 8, generator=generator, requires_grad=True)
    targets = torch.randint(0, vocab, (4, tokens // 4), generator=generator)

    chunked = LargestTensor()
    with chunked:
        lm_loss(hidden, weight, targets, z_loss_coef=1e-4, chunk_tokens=chunk).loss.backward()
    assert chunked.largest == chunk * vocab  # one chunk's logits, never tokens x vocab

    full = LargestTensor()  # the check can fail: the old path makes the full logits
    with full:
        reference(hidden, weight, targets, 1e-4)[0].backward()
    assert full.largest >= tokens * vocab


# ------------------------------------------------------------------------------ in the model


def tiny(tying: bool) -> TransformerConfig:
    return TransformerConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64,
                             vocab_size=90, embedding_size=96, weight_tying=tying,
                             eos_token_id=0, pad_token_id=1)  # fmt: skip


@pytest.mark.parametrize("tying", [False, True])
def test_model_loss_equals_the_loss_of_its_logits(tying: bool) -> None:
    torch.manual_seed(0)
    model = OLMo(tiny(tying))
    ids = torch.randint(0, 90, (2, 13))
    inputs_, targets = ids[:, :-1], ids[:, 1:]
    out = model(inputs_, targets=targets, z_loss_coef=1e-3, loss_chunk_tokens=7)
    (out.loss / 2).backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    want, ce, zl = reference_of_model(model, inputs_, targets, 1e-3)
    (want / 2).backward()
    assert out.ce.item() == pytest.approx(ce.item(), rel=1e-6)
    assert out.z_loss.item() == pytest.approx(zl.item(), rel=1e-6)
    names = {name for name, p in model.named_parameters() if p.grad is not None}
    assert set(got) == names and ("lm_head.weight" in names) != tying
    for name, p in model.named_parameters():
        assert p.grad is not None
        assert_grads_close(got[name], p.grad, rel=1e-6)


def reference_of_model(
    model: OLMo, ids: torch.Tensor, targets: torch.Tensor, coef: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = model(ids).float()
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    zl = z_loss(logits)
    return ce + coef * zl, ce, zl


def test_model_refuses_targets_with_logits_at() -> None:
    model = OLMo(tiny(False))
    ids = torch.randint(0, 90, (1, 4))
    at = (torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="logits_at or targets, not both"):
        model(ids, targets=ids, logits_at=at)


# ------------------------------------------------------------------------------------ on CUDA


def cuda_peak_bytes(step: Any) -> int:
    """Peak CUDA memory that ``step()`` allocates beyond what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@pytest.mark.gpu
def test_bf16_on_cuda_matches_fp32_and_peaks_far_below_the_full_logits() -> None:
    """OLMo-1B's vocabulary and a micro-batch of 8192 tokens, bf16 as FSDP2 hands it over."""
    tokens, d_model, vocab, chunk = 8192, 256, 50304, 1024
    generator = torch.Generator(device="cuda").manual_seed(0)
    hidden32 = torch.randn(tokens, d_model, device="cuda", generator=generator)
    weight32 = 0.05 * torch.randn(vocab, d_model, device="cuda", generator=generator)
    targets = torch.randint(0, vocab, (tokens,), device="cuda", generator=generator)
    hidden = hidden32.bfloat16().requires_grad_()
    weight = weight32.bfloat16().requires_grad_()
    result: dict[str, torch.Tensor] = {}

    def chunked() -> None:
        out = lm_loss(hidden, weight, targets, z_loss_coef=1e-4, chunk_tokens=chunk)
        out.loss.backward()
        result["loss"] = out.loss.detach()

    def unchunked() -> None:
        logits = F.linear(hidden, weight).float()
        loss = F.cross_entropy(logits, targets) + 1e-4 * z_loss(logits)
        loss.backward()

    full_logits_bytes = tokens * vocab * 4
    peak = cuda_peak_bytes(chunked)
    hidden.grad = weight.grad = None
    assert cuda_peak_bytes(unchunked) > full_logits_bytes  # the check can fail
    # about 370 MB: one chunk's fp32 logits (206 MB) and a bf16 copy, the fp32 weight grad
    assert peak < full_logits_bytes / 3, f"peak {peak / 2**20:.0f} MiB"
    logits32 = hidden.detach().float() @ weight.detach().float().T
    want = F.cross_entropy(logits32, targets) + 1e-4 * z_loss(logits32)
    assert result["loss"].item() == pytest.approx(want.item(), rel=1e-3)
