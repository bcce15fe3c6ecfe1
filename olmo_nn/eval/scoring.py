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
from dataclasses import dataclass, field
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
    "encode_requests",
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


def encode_requests(
    tokenizer: Tokenizer, requests: Sequence[Request], convention: Convention = "separate"
) -> list[tuple[list[int], list[int]]]:
    """Token ids of (context, continuation) of each request under ``convention``.

    Texts go through the tokenizer's batch encoder, each distinct context once.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}: expected one of {CONVENTIONS}")
    if convention == "separate":
        contexts = [r.context for r in requests]
        continuations = tokenizer.encode_batch([r.continuation for r in requests])
        return list(zip(_encode_distinct(tokenizer, contexts), continuations, strict=True))
    contexts, wholes = [], []
    for request in requests:
        context, continuation = request.context, request.continuation
        num_spaces = len(context) - len(context.rstrip())
        if num_spaces > 0:
            continuation = context[-num_spaces:] + continuation
            context = context[:-num_spaces]
        contexts.append(context)
        wholes.append(context + continuation)
    context_ids = _encode_distinct(tokenizer, contexts)
    return [
        (context, whole[len(context) :])
        for context, whole in zip(context_ids, tokenizer.encode_batch(wholes), strict=True)
    ]


def encode_request(
    tokenizer: Tokenizer, request: Request, convention: Convention = "separate"
) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) under ``convention``."""
    return encode_requests(tokenizer, [request], convention)[0]


def _encode_distinct(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """``encode_batch(texts)``, encoding each distinct text once (choices share contexts)."""
    distinct = list(dict.fromkeys(texts))
    ids = dict(zip(distinct, tokenizer.encode_batch(distinct), strict=True))
    return [ids[text] for text in texts]


@dataclass(frozen=True)
class _Sequence:
    """One request's tokens, cut to the model's window."""

    index: int
    context: list[int]
    """Never empty (EOS stands in for an empty context); kept from the right when truncated."""
    continuation: list[int]
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
    # The input is context + continuation[:-1]: keep the last max_length + 1 tokens of both.
    keep = model.max_length + 1 - len(continuation)
    truncated = len(context) > keep
    return _Sequence(index, context[-keep:], continuation, truncated)


@dataclass
class _Row:
    """One row of a forward pass: a context, then one segment per continuation scored in it.

    A segment holds its continuation without the last token; it sees the context and itself
    (causally) but no other segment, and its positions restart where the context ends, so
    every continuation is scored exactly as in a row of its own.
    """

    num_context: int
    input_ids: list[int]
    position_ids: list[int]
    segment_ids: list[int]
    """0 for the context, ``i`` for the i-th segment."""
    scored: list[tuple[int, list[int], list[int]]] = field(default_factory=list)
    """(request index, continuation ids, positions whose logits predict them)."""

    @classmethod
    def of_context(cls, context: list[int]) -> _Row:
        return cls(len(context), list(context), list(range(len(context))), [0] * len(context))

    def add(self, sequence: _Sequence) -> None:
        """Score ``sequence`` (whose context is this row's) in a new segment."""
        num_context = self.num_context
        segment = sequence.continuation[:-1]
        start = len(self.input_ids)
        self.input_ids.extend(segment)
        self.position_ids.extend(range(num_context, num_context + len(segment)))
        self.segment_ids.extend([len(self.scored) + 1] * len(segment))
        positions = [num_context - 1, *range(start, start + len(segment))]
        self.scored.append((sequence.index, sequence.continuation, positions))

    @property
    def num_predicting(self) -> int:
        """Distinct positions whose logits this row needs."""
        return len({position for _, _, positions in self.scored for position in positions})

    @property
    def is_causal(self) -> bool:
        """At most one segment has tokens: the plain causal mask and positions are exact."""
        return sum(1 for _, continuation, _ in self.scored if len(continuation) > 1) <= 1


PACKED_ROW_TOKENS = 256
"""A row that shares its context grows to at most this many tokens (or the longest single
request, if longer): attention and its block mask cost the square of a row's width, and a short
context shared by many continuations (the unconditional requests, all ``"Answer:"``) saves
little per continuation, so one very wide row would cost more than it saves."""


def _pack(sequences: Sequence[_Sequence], max_length: int, share_prefix: bool) -> list[_Row]:
    """Rows of at most ``max_length`` tokens.

    With ``share_prefix``, one row per distinct context (another when the next continuation
    would take the row past :data:`PACKED_ROW_TOKENS` or the longest single request, whichever
    is wider, or past ``max_length``), else one per sequence.
    """
    longest = max((len(s.context) + len(s.continuation) - 1 for s in sequences), default=0)
    width = min(max_length, max(PACKED_ROW_TOKENS, longest))
    rows: list[_Row] = []
    open_rows: dict[tuple[int, ...], _Row] = {}
    for sequence in sequences:
        key = tuple(sequence.context)
        row = open_rows.get(key) if share_prefix else None
        if row is None or len(row.input_ids) + len(sequence.continuation) - 1 > width:
            row = _Row.of_context(sequence.context)
            rows.append(row)
            open_rows[key] = row
        row.add(sequence)
    return rows


def score_requests(
    model: LanguageModel,
    requests: Sequence[Request],
    *,
    convention: Convention = "separate",
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    share_prefix: bool = True,
) -> list[RequestScore]:
    """Log-likelihood of each request's continuation, in the order of ``requests``.

    With ``share_prefix`` (and a model that :attr:`~LanguageModel.accepts_packed_rows`),
    requests whose context tokens are identical (the choices of one example) share one row:
    the context once, then each continuation in its own attention block, so one forward pass
    scores every choice. Otherwise each request is a row of its own. The results are the same
    up to float rounding.

    Rows are sorted longest first and batched, at most ``batch_size`` rows and (if given)
    ``max_batch_tokens`` padded tokens per forward pass, right-padded (padding after a row
    cannot change its logits). The output layer (where the model allows, see
    :meth:`LanguageModel.logits_at`) and the float32 log-softmax run only at the positions
    that predict continuation tokens, once per distinct position.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    if max_batch_tokens is not None and max_batch_tokens < model.max_length:
        raise ValueError(
            f"max_batch_tokens={max_batch_tokens} must be at least the model's window "
            f"({model.max_length}), or None"
        )
    tokenizer = model.tokenizer
    encoded = encode_requests(tokenizer, requests, convention)
    # Identical token sequences (the unconditional " yes" of every BoolQ example) run once.
    distinct: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    first = [distinct.setdefault((tuple(c), tuple(x)), i) for i, (c, x) in enumerate(encoded)]
    sequences = [_prepare(model, i, *encoded[i]) for i in distinct.values()]
    rows = _pack(sequences, model.max_length, share_prefix and model.accepts_packed_rows)
    rows.sort(key=lambda row: len(row.input_ids), reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_positions = max(1, MAX_LOGITS_BYTES // (4 * model.vocab_size))
    truncated = {sequence.index: sequence.truncated for sequence in sequences}
    scored: dict[int, tuple[int, float, bool]] = {}
    for batch in _batches(rows, batch_size, max_batch_tokens, max_positions):
        for index, num_tokens, logprob_sum, is_greedy in _score_batch(model, batch, pad_id):
            scored[index] = (num_tokens, logprob_sum, is_greedy)
    results = []
    for request, index in zip(requests, first, strict=True):
        num_tokens, logprob_sum, is_greedy = scored[index]
        results.append(
            RequestScore(
                logprob_sum=logprob_sum,
                num_tokens=num_tokens,
                num_chars=len(request.continuation),
                is_greedy=is_greedy,
                truncated=truncated[index],
            )
        )
    return results


MAX_LOGITS_BYTES = 2**28
"""A forward pass selects at most this many bytes of float32 logits (256 MiB: 1,334 positions
of OLMo's 50,304-row output layer); a batch that would select more is split."""


MIN_ROW_FILL = 0.75
"""A row joins a batch only if it fills at least this share of the batch's width: right
padding is computed like real tokens, so a batch of very unequal rows (a few dozen rows, or a
long tail of lengths) would spend up to half its time on padding."""


def _batches(
    rows: Sequence[_Row], batch_size: int, max_batch_tokens: int | None, max_positions: int
) -> list[list[_Row]]:
    """Consecutive rows (longest first), at most ``batch_size`` and ``max_batch_tokens``, at
    most ``max_positions`` predicting positions (unless one row has more), and each row at
    least :data:`MIN_ROW_FILL` of the batch's width."""
    batches: list[list[_Row]] = []
    positions = 0
    for row in rows:
        needed = row.num_predicting
        if batches:
            batch = batches[-1]
            width = len(batch[0].input_ids)  # the longest: rows come longest first
            fits = max_batch_tokens is None or (len(batch) + 1) * width <= max_batch_tokens
            fills = len(row.input_ids) >= MIN_ROW_FILL * width
            if len(batch) < batch_size and fits and fills and positions + needed <= max_positions:
                batch.append(row)
                positions += needed
                continue
        batches.append([row])
        positions = needed
    return batches


def _block_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool: causal, and a segment sees the context (0) and itself only.

    Padding (-1) sees everything before it, so that no attention row is empty.
    """
    width = segment_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]  # (B, T, 1), (B, 1, T)
    visible = (key == 0) | (key == query) | (query == -1)  # (B, T, T)
    return (causal & visible)[:, None]


def _score_batch(
    model: LanguageModel, batch: Sequence[_Row], pad_id: int
) -> list[tuple[int, int, float, bool]]:
    """(request index, tokens, log-probability sum, is greedy) of each request in ``batch``."""
    width = len(batch[0].input_ids)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(batch), width), dtype=torch.long)
    segment_ids = torch.full((len(batch), width), -1, dtype=torch.long)
    selected: dict[tuple[int, int], int] = {}  # (row, position) -> its row in the logits
    picks: list[int] = []
    targets: list[int] = []
    owners: list[tuple[int, int]] = []
    for b, row in enumerate(batch):
        length = len(row.input_ids)
        input_ids[b, :length] = torch.tensor(row.input_ids)
        position_ids[b, :length] = torch.tensor(row.position_ids)
        segment_ids[b, :length] = torch.tensor(row.segment_ids)
        for index, continuation, predicting in row.scored:
            for position in predicting:
                picks.append(selected.setdefault((b, position), len(selected)))
            targets.extend(continuation)
            owners.append((index, len(continuation)))
    rows, positions = (torch.tensor(axis) for axis in zip(*selected, strict=True))
    packed: dict[str, torch.Tensor] = {}
    if not all(row.is_causal for row in batch):
        mask = _block_mask(segment_ids.to(model.device))  # built where it is used: (B, 1, T, T)
        packed = {"position_ids": position_ids, "attention_mask": mask}
    # (U, V): the distinct positions that predict continuation tokens, and nothing else
    logits = model.logits_at(input_ids, rows, positions, **packed).float()
    pick = torch.tensor(picks, device=logits.device)
    target_ids = torch.tensor(targets, device=logits.device)
    maxima, greedy = logits.max(dim=-1)  # (U,) each: one pass gives both
    target_logits = logits[pick, target_ids]  # (N,)
    # log_softmax at the targets only: the log-sum-exp computed in place (the logits are not
    # needed after this), so no second (U, V) tensor is built.
    normalizer = logits.sub_(maxima[:, None]).exp_().sum(dim=-1).log_().add_(maxima)  # (U,)
    token_logprobs = target_logits - normalizer[pick]  # (N,)
    token_greedy = greedy[pick] == target_ids  # (N,)
    sizes = [size for _, size in owners]
    # Summed in float64: a float32 sum of ~100 is only good to ~1e-5.
    sums = [float(x.sum()) for x in token_logprobs.cpu().double().split(sizes)]
    all_greedy = [bool(x.all()) for x in token_greedy.cpu().split(sizes)]
    return [
        (index, size, total, is_greedy)
        for (index, size), total, is_greedy in zip(owners, sums, all_greedy, strict=True)
    ]


def unconditional_requests(
    requests: Sequence[Request], context: str = UNCONDITIONAL_CONTEXT
) -> list[Request]:
    """The requests whose scores the ``unconditional`` normalization subtracts."""
    return [Request(context, r.continuation) for r in requests]


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
