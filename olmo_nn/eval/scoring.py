"""Rank classification: log P(continuation | context) for many requests, and its normalizations.

Two tokenization conventions are offered, and a result names which one it used:

* ``"separate"`` (Catwalk, OLMo's own evaluation): the context and the continuation are
  tokenized on their own, the continuation with its leading space as given.
* ``"joint"`` (lm-evaluation-harness): trailing whitespace of the context is moved onto the
  continuation, ``context + continuation`` is tokenized as one text, and the continuation is
  whatever follows the context's own token count (``_encode_pair``, replicated exactly).

They differ only where BPE merges across the boundary, e.g. a context ending in a space.

An empty context is replaced by the end-of-text token, as both harnesses do. A sequence
longer than the model's window keeps its last ``max_length + 1`` tokens (the context is
truncated from the left) and is reported with ``truncated=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from olmo_nn.eval.models import LanguageModel
from olmo_nn.tokenizer import Tokenizer

__all__ = [
    "CONVENTIONS",
    "NORMALIZATIONS",
    "UNCONDITIONAL_CONTEXT",
    "Request",
    "RequestScore",
    "encode_request",
    "normalize",
    "score_requests",
    "unconditional_requests",
]

Convention = Literal["separate", "joint"]
Normalization = Literal["none", "per_token", "per_char", "unconditional"]
CONVENTIONS: tuple[Convention, ...] = ("separate", "joint")
NORMALIZATIONS: tuple[Normalization, ...] = ("none", "per_token", "per_char", "unconditional")
UNCONDITIONAL_CONTEXT = "Answer:"
"""The context of the unconditional score that the ``unconditional`` normalization subtracts."""


@dataclass(frozen=True)
class Request:
    """Score ``continuation`` after ``context`` (the continuation carries its leading space)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class RequestScore:
    """The log-likelihood of one request's continuation."""

    logprob_sum: float
    """Sum over the continuation's tokens of log P(token | everything before it)."""
    num_tokens: int
    """Tokens in the continuation (under the convention used)."""
    num_chars: int
    """Characters in the continuation as given in the request."""
    is_greedy: bool
    """Every continuation token is the model's top prediction."""
    truncated: bool
    """The context was cut from the left to fit the model's window."""


def encode_request(
    tokenizer: Tokenizer, request: Request, convention: Convention = "separate"
) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) under ``convention``."""
    if convention == "separate":
        return tokenizer.encode(request.context), tokenizer.encode(request.continuation)
    if convention == "joint":
        context, continuation = request.context, request.continuation
        num_spaces = len(context) - len(context.rstrip())
        if num_spaces > 0:
            continuation = context[-num_spaces:] + continuation
            context = context[:-num_spaces]
        whole = tokenizer.encode(context + continuation)
        context_ids = tokenizer.encode(context)
        return context_ids, whole[len(context_ids) :]
    raise ValueError(f"convention={convention!r}: expected one of {CONVENTIONS}")


@dataclass(frozen=True)
class _Sequence:
    index: int
    input_ids: list[int]
    """Model input: context + continuation without its last token, at most max_length."""
    targets: list[int]
    """The continuation: predicted at the last len(targets) positions of input_ids."""
    truncated: bool


def _prepare(
    model: LanguageModel, index: int, context: list[int], continuation: list[int]
) -> _Sequence:
    if not continuation:
        raise ValueError(f"request {index} has an empty continuation: nothing to score")
    if len(continuation) > model.max_length:
        raise ValueError(
            f"request {index}: its continuation has {len(continuation)} tokens, more than the "
            f"model's window of {model.max_length}"
        )
    if not context:
        eos = model.tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"request {index} has an empty context and the tokenizer no EOS")
        context = [eos]
    whole = context + continuation
    truncated = len(whole) > model.max_length + 1
    whole = whole[-(model.max_length + 1) :]
    return _Sequence(index, whole[:-1], continuation, truncated)


def score_requests(
    model: LanguageModel,
    requests: Sequence[Request],
    *,
    convention: Convention = "separate",
    batch_size: int = 32,
) -> list[RequestScore]:
    """Log-likelihood of each request's continuation, in the order of ``requests``.

    Sequences are sorted longest first, batched and right-padded (causal attention: padding
    after a sequence cannot change its logits). Each sequence runs one forward pass; the
    output layer (where the model allows, see :meth:`LanguageModel.logits_at`) and the
    float32 log-softmax run on the continuation positions only.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    tokenizer = model.tokenizer
    sequences = [
        _prepare(model, i, *encode_request(tokenizer, request, convention))
        for i, request in enumerate(requests)
    ]
    sequences.sort(key=lambda s: len(s.input_ids), reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[RequestScore | None] = [None] * len(sequences)
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        for sequence, (logprob_sum, is_greedy) in zip(
            batch, _score_batch(model, batch, pad_id), strict=True
        ):
            results[sequence.index] = RequestScore(
                logprob_sum=logprob_sum,
                num_tokens=len(sequence.targets),
                num_chars=len(requests[sequence.index].continuation),
                is_greedy=is_greedy,
                truncated=sequence.truncated,
            )
    return [r for r in results if r is not None]


def _score_batch(
    model: LanguageModel, batch: Sequence[_Sequence], pad_id: int
) -> list[tuple[float, bool]]:
    width = max(len(s.input_ids) for s in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    rows: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    for b, sequence in enumerate(batch):
        length = len(sequence.input_ids)
        input_ids[b, :length] = torch.tensor(sequence.input_ids, dtype=torch.long)
        rows.extend([b] * len(sequence.targets))
        positions.extend(range(length - len(sequence.targets), length))
        targets.extend(sequence.targets)
    # (N, V): only the rows that predict continuation tokens
    selected = model.logits_at(input_ids, torch.tensor(rows), torch.tensor(positions)).float()
    target_ids = torch.tensor(targets, device=selected.device)
    token_logprobs = selected.log_softmax(dim=-1).gather(1, target_ids[:, None])[:, 0]  # (N,)
    token_greedy = selected.argmax(dim=-1) == target_ids  # (N,)
    sizes = [len(s.targets) for s in batch]
    sums = [float(x.sum()) for x in token_logprobs.cpu().split(sizes)]
    greedy = [bool(x.all()) for x in token_greedy.cpu().split(sizes)]
    return list(zip(sums, greedy, strict=True))


def unconditional_requests(requests: Sequence[Request]) -> list[Request]:
    """The requests whose scores the ``unconditional`` normalization subtracts."""
    return [Request(UNCONDITIONAL_CONTEXT, r.continuation) for r in requests]


def normalize(
    scores: Sequence[RequestScore],
    kind: Normalization,
    *,
    unconditional: Sequence[RequestScore] | None = None,
) -> list[float]:
    """One number per score, higher is better; rank classification picks the largest.

    ``none``: the sum of log-probabilities; ``per_token``: divided by the continuation's
    tokens; ``per_char``: divided by its characters; ``unconditional``: minus
    log P(continuation | "Answer:"), whose scores ``unconditional`` gives in the same order
    (see :func:`unconditional_requests`).
    """
    if kind == "none":
        return [s.logprob_sum for s in scores]
    if kind == "per_token":
        return [s.logprob_sum / s.num_tokens for s in scores]
    if kind == "per_char":
        # An empty continuation cannot be scored, so num_chars >= 1.
        return [s.logprob_sum / s.num_chars for s in scores]
    if kind == "unconditional":
        if unconditional is None or len(unconditional) != len(scores):
            raise ValueError(
                "kind='unconditional' needs unconditional= with one score per request, from "
                "score_requests(model, unconditional_requests(requests))"
            )
        return [s.logprob_sum - u.logprob_sum for s, u in zip(scores, unconditional, strict=True)]
    raise ValueError(f"kind={kind!r}: expected one of {NORMALIZATIONS}")
