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

Requests are packed into rows that share work: the choices of one example after their common
context, and the questions of a few-shot task after their common prompt (the description and
the shots, hundreds of tokens that every question repeats). A row is a tree of segments, each
seeing only its ancestors and itself, with positions continuing from its parent, so each
request is scored as in a row of its own (up to float rounding) while the shared tokens run
once per row.
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
    """One row of a forward pass: a tree of token segments, laid out depth first.

    Segment 0 (the root) starts the row; every other segment has a parent, and its tokens see
    those of its ancestors and itself (causally) but no other segment's, with positions that
    continue from the parent's last one. So a token is computed exactly as in a row holding
    only its chain of ancestors. Segments are appended in depth-first order (a new segment's
    parent is the last segment or one of its ancestors), so each segment's subtree is a
    contiguous run of the row, which is what :func:`_block_mask` relies on.

    A request's continuation (without its last token) is a segment under its context's last
    segment; its context is either the root (one context per row) or the root holding the
    prefix several contexts share, then a segment with the rest of the context.
    """

    input_ids: list[int]
    position_ids: list[int]
    segment_ids: list[int]
    """The segment of each token."""
    parents: list[int]
    """The parent of each segment; -1 for the root."""
    starts: list[int]
    """The row index of each segment's first token."""
    scored: list[tuple[int, list[int], list[int]]] = field(default_factory=list)
    """(request index, continuation ids, positions whose logits predict them)."""

    @classmethod
    def of_context(cls, context: list[int]) -> _Row:
        """A row whose root holds ``context`` (never empty)."""
        assert context, "a row's root holds at least one token"
        return cls(list(context), list(range(len(context))), [0] * len(context), [-1], [0])

    def _end(self, segment: int) -> int:
        """One past the row index of ``segment``'s last token."""
        return self.starts[segment + 1] if segment + 1 < len(self.starts) else len(self.input_ids)

    def add_segment(self, tokens: Sequence[int], parent: int) -> int:
        """Append ``tokens`` as a child of ``parent``; its id (``parent`` if ``tokens`` is
        empty: an empty segment changes nothing that its children see)."""
        if not tokens:
            return parent
        last = len(self.parents) - 1
        while last not in (parent, -1):
            last = self.parents[last]
        assert last == parent, "segments must be appended depth first"
        segment = len(self.parents)
        start = len(self.input_ids)
        first_position = self.position_ids[self._end(parent) - 1] + 1
        self.parents.append(parent)
        self.starts.append(start)
        self.input_ids.extend(tokens)
        self.position_ids.extend(range(first_position, first_position + len(tokens)))
        self.segment_ids.extend([segment] * len(tokens))
        return segment

    def add(self, sequence: _Sequence, context: int) -> None:
        """Score ``sequence``, whose context ends with segment ``context``, in a new segment."""
        predicting = [self._end(context) - 1]
        segment = self.add_segment(sequence.continuation[:-1], context)
        if segment != context:
            predicting.extend(range(self.starts[segment], self._end(segment)))
        self.scored.append((sequence.index, sequence.continuation, predicting))

    def key_ends(self) -> list[int]:
        """For each token, one past the row index of its segment's subtree: the queries in
        ``[index, key_end)`` are the ones that see it."""
        ends = [self._end(segment) for segment in range(len(self.parents))]
        for segment in reversed(range(1, len(self.parents))):
            parent = self.parents[segment]
            ends[parent] = max(ends[parent], ends[segment])
        return [ends[segment] for segment in self.segment_ids]

    @property
    def num_predicting(self) -> int:
        """Distinct positions whose logits this row needs."""
        return len({position for _, _, positions in self.scored for position in positions})

    @property
    def is_causal(self) -> bool:
        """The segments form one chain: the plain causal mask and positions are exact."""
        return all(parent == segment - 1 for segment, parent in enumerate(self.parents[1:], 1))


PACKED_ROW_TOKENS = 256
"""A row of one context grows to at most this many tokens (or the longest single request, if
longer): attention and its block mask cost the square of a row's width, and a short context
shared by many continuations (the unconditional requests, all ``"Answer:"``) saves little per
continuation, so one very wide row would cost more than it saves."""

MIN_SHARED_PREFIX_TOKENS = 64
"""Distinct contexts share a row only if they begin with at least this many common tokens
(see :func:`_shared_prefixes`)..."""

MIN_SHARED_FRACTION = 0.5
"""... and these are at least this share of each of the contexts' tokens."""

SHARED_ROW_GROWTH = 4
"""A row of several contexts that share a prefix of ``P`` tokens grows to ``4 * P`` tokens
(at most the model's window): ``k = 3P/S`` contexts whose rests (with their continuations)
take ``S`` tokens each, 4-12 questions of MMLU 5-shot (``P`` of 300-700 tokens, ``S`` of
50-150).

Per context, such a row costs ``P/k + S`` tokens through the layers' matmuls (``16 d**2``
multiply-adds per token and layer, OLMo's SwiGLU at a hidden size of ``4d``) and
``(P + kS)**2 / k`` query-key pairs of attention (``2d`` each: the block mask makes the
kernel compute the whole square). The attention alone is least at ``k = P/S`` (a row of
``2P``); the sum is least at ``k = sqrt(P * (8d + P)) / S``, a row of
``P + sqrt(P * (8d + P))``: 4-6 ``P`` at OLMo-150M's ``d = 768`` (``P`` of 600 and 300),
3.5-4.5 ``P`` if the masked attention runs at half the matmuls' rate, wider for larger
models. ``4P`` takes most of the saving (the tokens per context fall from ``P + S`` in a row
of its own to ``4S/3``, against ``2S`` at ``2P``) without relying on the model's width."""


def _shares_enough(prefix_length: int, longest_context: int) -> bool:
    """Whether contexts of at most ``longest_context`` tokens that begin with the same
    ``prefix_length`` tokens are worth one row (see :func:`_shared_prefixes`)."""
    return (
        prefix_length >= MIN_SHARED_PREFIX_TOKENS
        and prefix_length >= MIN_SHARED_FRACTION * longest_context
    )


def _common_prefix_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    length = min(len(a), len(b))
    start = 0
    while start < length and a[start : start + 64] == b[start : start + 64]:
        start += 64  # whole slices compare at C speed; only the last one token by token
    return next((i for i in range(start, min(start + 64, length)) if a[i] != b[i]), length)


def _shared_prefixes(contexts: Sequence[tuple[int, ...]]) -> list[tuple[int, list[int]]]:
    """Groups of ``contexts`` (indices, in order) and the number of leading tokens each
    group's contexts share; a context that shares too little is a group of its own, whose
    prefix is the whole context.

    A few-shot prompt (MMLU's description and 5 dev questions, OLMES's curated shots) is
    hundreds of tokens that every question of a task repeats: those contexts share a row. A
    group needs :data:`MIN_SHARED_PREFIX_TOKENS` common tokens: its row needs the block mask
    (not the plain causal one, which attention kernels compute at half the cost) and wastes
    attention between its contexts' rests, which a prefix of a few dozen tokens does not pay
    for, while zero-shot prompts share only a few (``"Question:"``; Winogrande's sentence up
    to the blank) and pack as before. It also needs :data:`MIN_SHARED_FRACTION` (most) of each
    context: a context saves its prefix's share of its tokens, and a row of
    :data:`SHARED_ROW_GROWTH` times the prefix holds fewer than three contexts whose rests are
    longer than the prefix. Contexts are compared in sorted order, where those with a common
    prefix are neighbours.
    """
    groups: list[tuple[int, list[int]]] = []
    longest = 0
    for index in sorted(range(len(contexts)), key=contexts.__getitem__):
        context = contexts[index]
        if groups:
            prefix_length, members = groups[-1]
            common = _common_prefix_length(contexts[members[-1]], context)
            shared = min(prefix_length, common)
            if _shares_enough(shared, max(longest, len(context))):
                members.append(index)
                groups[-1] = (shared, members)
                longest = max(longest, len(context))
                continue
        groups.append((len(context), [index]))
        longest = len(context)
    return [(prefix_length, sorted(members)) for prefix_length, members in groups]


def _tree_rows(
    prefix_length: int, contexts: Sequence[Sequence[_Sequence]], width: int
) -> list[_Row]:
    """Rows of at most ``width`` tokens for ``contexts`` (each a list of the sequences of one
    context, all beginning with the same ``prefix_length`` tokens): the prefix as the root,
    then each context's rest under it and its continuations under that; a context whose
    continuations do not fit continues in a new row (with the prefix and its rest again)."""
    rows: list[_Row] = []
    row: _Row | None = None
    for sequences in contexts:
        context = sequences[0].context
        rest = context[prefix_length:]
        segment: int | None = None  # where the context ends in ``row``
        for sequence in sequences:
            needed = len(sequence.continuation) - 1 + (len(rest) if segment is None else 0)
            if row is None or len(row.input_ids) + needed > width:
                row = _Row.of_context(context[:prefix_length])
                rows.append(row)
                segment = None
            if segment is None:
                segment = row.add_segment(rest, 0)
            row.add(sequence, segment)
    return rows


def _pack(sequences: Sequence[_Sequence], max_length: int, share_prefix: bool) -> list[_Row]:
    """Rows of at most ``max_length`` tokens.

    Without ``share_prefix``, one row per sequence. With it, one tree per group of contexts
    (:func:`_shared_prefixes`). A group of one context grows to :data:`PACKED_ROW_TOKENS` or
    the longest single request, whichever is wider; a group of several to
    :data:`SHARED_ROW_GROWTH` times its shared prefix (or its longest request, if longer).
    """
    if not share_prefix:
        rows = []
        for sequence in sequences:
            row = _Row.of_context(sequence.context)
            row.add(sequence, 0)
            rows.append(row)
        return rows
    longest = max((len(s.context) + len(s.continuation) - 1 for s in sequences), default=0)
    by_context: dict[tuple[int, ...], list[_Sequence]] = {}
    for sequence in sequences:
        by_context.setdefault(tuple(sequence.context), []).append(sequence)
    contexts = list(by_context.values())
    rows = []
    for prefix_length, members in _shared_prefixes(list(by_context)):
        group = [contexts[i] for i in members]
        if len(group) == 1:
            width = max(PACKED_ROW_TOKENS, longest)
        else:
            own = max(len(s.context) + len(s.continuation) - 1 for c in group for s in c)
            width = max(PACKED_ROW_TOKENS, SHARED_ROW_GROWTH * prefix_length, own)
        rows.extend(_tree_rows(prefix_length, group, min(max_length, width)))
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
    scores every choice. Distinct contexts that begin with a long common run of tokens (a
    few-shot prompt: :func:`_shared_prefixes` says how long) share a row too: the common
    prefix once, then each context's rest in its own block that sees the prefix, then that
    context's continuations, which see the prefix and their context; such a row grows to
    :data:`SHARED_ROW_GROWTH` times the prefix (within the model's window). Otherwise each
    request is a row of its own. The results are the same up to float rounding.

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


def _block_mask(key_ends: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool: query ``t`` sees key ``s`` if ``s <= t < key_ends[s]``.

    ``key_ends`` (B, T) is :meth:`_Row.key_ends` (the width for padding): causal, and a key
    is seen from its own segment's subtree, that is by the tokens whose segment descends from
    (or is) its segment. Every token sees itself, so no attention row is empty.
    """
    width = key_ends.shape[1]
    index = torch.arange(width, device=key_ends.device)
    causal = index[None, :] <= index[:, None]  # (T, T): key <= query
    in_subtree = index[None, :, None] < key_ends[:, None, :]  # (B, T, T): query < key's end
    return (causal & in_subtree)[:, None]


def _score_batch(
    model: LanguageModel, batch: Sequence[_Row], pad_id: int
) -> list[tuple[int, int, float, bool]]:
    """(request index, tokens, log-probability sum, is greedy) of each request in ``batch``."""
    width = len(batch[0].input_ids)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(batch), width), dtype=torch.long)
    key_ends = torch.full((len(batch), width), width, dtype=torch.long)
    selected: dict[tuple[int, int], int] = {}  # (row, position) -> its row in the logits
    picks: list[int] = []
    targets: list[int] = []
    owners: list[tuple[int, int]] = []
    for b, row in enumerate(batch):
        length = len(row.input_ids)
        input_ids[b, :length] = torch.tensor(row.input_ids)
        position_ids[b, :length] = torch.tensor(row.position_ids)
        key_ends[b, :length] = torch.tensor(row.key_ends())
        for index, continuation, predicting in row.scored:
            for position in predicting:
                picks.append(selected.setdefault((b, position), len(selected)))
            targets.extend(continuation)
            owners.append((index, len(continuation)))
    rows, positions = (torch.tensor(axis) for axis in zip(*selected, strict=True))
    packed: dict[str, torch.Tensor] = {}
    if not all(row.is_causal for row in batch):
        mask = _block_mask(key_ends.to(model.device))  # built where it is used: (B, 1, T, T)
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
