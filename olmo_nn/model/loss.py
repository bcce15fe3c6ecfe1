"""The training loss over the output layer, chunk by chunk: never all the logits at once.

A language model's logits are (tokens x vocabulary): at OLMo-1B with a micro-batch of 4 x 2048
tokens and 50304 rows that is 1.6 GB in fp32, and as much again for their gradient.
:func:`lm_loss` takes the final hidden states and the output weight instead, and for each
chunk of ``chunk_tokens`` tokens computes that chunk's logits in the compute dtype, upcasts
them to fp32, and reduces them to the chunk's losses *and* the gradients of the loss with
respect to the hidden states and the weight (as Liger's and OLMo-core's fused linear
cross-entropy do). Backward then only scales those gradients; the output matmul is never run
twice and no tensor of (tokens x vocabulary) elements is ever allocated.

Memory beyond the model's own: one chunk's fp32 logits (``chunk_tokens x vocabulary x 4``
bytes, 0.8 GB at the default 4096 tokens and 50304 rows, plus a bf16 copy under bf16), the
hidden states' gradient (tokens x d_model) and the weight's gradient in fp32 (vocabulary x
d_model), both held from forward until backward.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

__all__ = ["DEFAULT_CHUNK_TOKENS", "LMLoss", "lm_loss"]

DEFAULT_CHUNK_TOKENS = 4096
"""Tokens per chunk: 4096 x 50304 fp32 logits are 0.8 GB, a matmul large enough for a GPU's
full throughput and small beside an H100's 80 GB."""


class LMLoss(NamedTuple):
    """The loss terms of one forward pass, each a scalar fp32 tensor."""

    loss: torch.Tensor
    """What to differentiate: ``ce + z_loss_coef * z_loss`` (``ce`` without a coefficient)."""
    ce: torch.Tensor
    """Mean cross-entropy over the tokens, detached (for logging)."""
    z_loss: torch.Tensor | None
    """Mean ``logsumexp(logits) ** 2`` over the tokens, detached; None without a coefficient."""


def lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    z_loss_coef: float | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> LMLoss:
    """Mean cross-entropy and z-loss of ``logits = hidden @ weight.T`` against ``targets``.

    ``hidden`` is (..., d_model), ``weight`` (vocabulary, d_model), ``targets`` the integer
    token ids of shape ``hidden.shape[:-1]``, each in [0, vocabulary). The values equal
    ``F.cross_entropy(logits.float(), targets)`` and
    :func:`olmo_nn.train.stability.z_loss` of ``logits`` (the mean over tokens of
    ``logsumexp(logits) ** 2``, OLMo's definition) to fp32 rounding, but the logits are
    formed ``chunk_tokens`` tokens at a time. The logits are computed in the autocast dtype
    when autocast is on (as ``F.linear`` would), else in the inputs' dtype; softmax, the
    losses and the weight's gradient accumulate in fp32.

    Only ``loss`` carries a gradient, and only for ``ce + z_loss_coef * z_loss``: the
    gradients are computed during forward (so no second output matmul is needed), which
    fixes how the two terms combine. Differentiate ``loss``; ``ce`` and ``z_loss`` are for
    logging. Under ``torch.no_grad`` (or when neither input requires grad) no gradient is
    computed.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must be the hidden states' shape without "
            f"d_model, {tuple(hidden.shape[:-1])}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight shape {tuple(weight.shape)} must be (vocabulary, {hidden.shape[-1]}): "
            "the output layer's weight for hidden states of that width"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer token ids, got dtype {targets.dtype}")
    if targets.numel() == 0:
        raise ValueError("the loss needs at least one target token; got none")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens} must be at least 1")
    if z_loss_coef is not None and not z_loss_coef >= 0:
        raise ValueError(f"z_loss_coef={z_loss_coef} must be >= 0, or None for no z-loss")
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type) and hidden.dtype.is_floating_point:
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    loss, ce, z = _ChunkedLMLoss.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        targets.reshape(-1),
        z_loss_coef,
        chunk_tokens,
        compute_dtype,
        needs_grad,
    )
    return LMLoss(loss=loss, ce=ce, z_loss=z if z_loss_coef is not None else None)


class _ChunkedLMLoss(torch.autograd.Function):
    """Forward computes the losses and their gradients chunk by chunk; backward scales those."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,  # (N, d)
        weight: torch.Tensor,  # (V, d)
        targets: torch.Tensor,  # (N,)
        z_loss_coef: float | None,
        chunk_tokens: int,
        compute_dtype: torch.dtype,
        needs_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_tokens = hidden.shape[0]
        acc_dtype = torch.promote_types(compute_dtype, torch.float32)  # fp32 (fp64 stays)
        want_hidden_grad = needs_grad and ctx.needs_input_grad[0]
        want_weight_grad = needs_grad and ctx.needs_input_grad[1]
        token_ce = torch.empty(num_tokens, device=hidden.device, dtype=acc_dtype)
        token_lse = torch.empty(num_tokens, device=hidden.device, dtype=acc_dtype)
        grad_hidden = torch.empty_like(hidden) if want_hidden_grad else None
        grad_weight = (
            torch.zeros(weight.shape, device=weight.device, dtype=acc_dtype)
            if want_weight_grad
            else None
        )
        inv_n = 1.0 / num_tokens
        coef = z_loss_coef or 0.0
        # Explicit casts instead of autocast, so the gradient matmuls below (which autocast
        # would see as forward ops) run in the same dtype as the logits.
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            w = weight.to(compute_dtype)  # (V, d)
            for start in range(0, num_tokens, chunk_tokens):
                end = min(start + chunk_tokens, num_tokens)
                h = hidden[start:end].to(compute_dtype)  # (n, d)
                t = targets[start:end, None]  # (n, 1)
                logits = (h @ w.T).to(acc_dtype)  # (n, V) fp32: the only fp32 (n, V) buffer
                row_max = logits.amax(dim=1, keepdim=True)  # (n, 1)
                target_shifted = logits.gather(1, t).squeeze(1) - row_max.squeeze(1)  # (n,)
                probs = logits.sub_(row_max).exp_()  # (n, V) in place: unnormalized softmax
                sums = probs.sum(dim=1, keepdim=True)  # (n, 1)
                log_sums = sums.log().squeeze(1)  # (n,)
                lse = log_sums + row_max.squeeze(1)  # (n,) log of the softmax normalizer
                token_lse[start:end] = lse
                # rounded as F.cross_entropy's log_softmax rounds: log(sum) - (x_t - max)
                token_ce[start:end] = log_sums - target_shifted
                if not (want_hidden_grad or want_weight_grad):
                    continue
                # d(ce + coef * z)/d logits = (softmax * (1 + 2 * coef * lse) - onehot) / N
                row_scale = (1.0 + 2.0 * coef * lse)[:, None] * inv_n / sums  # (n, 1)
                grad_logits = probs.mul_(row_scale)
                grad_logits.scatter_add_(1, t, torch.full_like(sums, -inv_n))
                grad_logits_c = grad_logits.to(compute_dtype)  # (n, V)
                if grad_hidden is not None:
                    grad_hidden[start:end] = grad_logits_c @ w  # (n, d)
                if grad_weight is not None:
                    if compute_dtype == acc_dtype:
                        grad_weight.addmm_(grad_logits_c.T, h)
                    else:  # a low-precision product per chunk, summed in fp32
                        grad_weight += grad_logits_c.T @ h  # (V, d)
                del logits, probs, grad_logits, grad_logits_c
        ce = token_ce.mean()
        z = token_lse.square().mean()
        loss = ce + z_loss_coef * z if z_loss_coef is not None else ce.clone()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(ce, z)
        return loss, ce, z

    @staticmethod
    def backward(
        ctx: Any, grad_loss: torch.Tensor, *_unused: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:  # scaled in fp32 at least, as autograd scales the logits'
            wide = torch.promote_types(grad_hidden.dtype, torch.float32)
            grad_hidden = (grad_hidden.to(wide) * grad_loss).to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None
