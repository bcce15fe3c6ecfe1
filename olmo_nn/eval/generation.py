"""Greedy generation with a KV cache, for generative tasks (Natural Questions, TriviaQA, …).

>>> outputs = generate(model, [GenerationRequest("Question: …\\nAnswer:", until=("\\n\\n",))])
>>> outputs[0].text                                       # the answer, cut at the first stop

lm-evaluation-harness's ``generate_until`` rules: each request's prompt is encoded as it is (no
BOS); the model extends it one argmax token at a time until it emits EOS, has produced
``max_new_tokens`` tokens, or the decoded text of its new tokens contains one of the request's
stop strings (``until``); the text is then cut before the first stop string. Requests are run
in batches of prompts sorted by length, longest first (so the first batch shows at once whether
memory suffices, and a batch's prompts are about as long), left-padded, with each token's
position counted from its row's first real token; a finished row leaves the batch. A prompt
longer than the model's window less ``max_new_tokens`` keeps its last tokens (``truncated``).

The argmax runs over the tokenizer's ids only: a model's output layer may have more rows
(OLMo pads 50,280 to 50,304), which no text can hold.

Our ``OLMo`` decodes through ``OLMo.forward(kv_cache=...)`` (:class:`~olmo_nn.model.KVCache`);
transformers' models through their own cache (``cache`` / ``past_key_values``), the same
inputs ``generate`` gives them (2D attention mask, position ids).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from olmo_nn.eval.models import LanguageModel
from olmo_nn.model import KVCache, OLMo

__all__ = [
    "Generation",
    "GenerationRequest",
    "batches_by_length",
    "cut_at_stops",
    "generate",
    "greedy_tokens",
]

StopReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt to continue greedily."""

    context: str
    until: tuple[str, ...] = ()
    """Stop strings: generation ends once the new text contains one, and is cut before it."""
    max_new_tokens: int = 50

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be at least 1")
        if any(not stop for stop in self.until):
            raise ValueError(f"until={self.until!r}: a stop string must not be empty")


@dataclass(frozen=True)
class Generation:
    """What the model generated for one request."""

    text: str
    """The new text, cut before the first stop string."""
    token_ids: list[int]
    """Every token generated (EOS excluded), including those of and after a stop string."""
    stop_reason: StopReason
    """``stop`` (a stop string), ``eos`` or ``length`` (``max_new_tokens`` reached)."""
    num_prompt_tokens: int
    truncated: bool
    """The prompt lost its first tokens to fit the model's window."""


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lm-eval's ``split(stop)[0]``)."""
    end = len(text)
    for stop in until:
        found = text.find(stop)
        if found != -1:
            end = min(end, found)
    return text[:end]


class _Decoder(ABC):
    """One batch's incremental forward passes: :meth:`prefill`, then :meth:`step` per token.

    Two kinds: :class:`_OLMoDecoder` (our model's :class:`~olmo_nn.model.KVCache`) and
    :class:`_TransformersDecoder` (a transformers model's own cache)."""

    def __init__(self, model: LanguageModel, vocab: int) -> None:
        self.model = model
        self.vocab = vocab

    @abstractmethod
    def prefill(self, input_ids: torch.Tensor, valid: torch.Tensor, capacity: int) -> torch.Tensor:
        """Run the left-padded prompts (``valid`` marks real tokens) into a cache of ``capacity``
        tokens per row (prompt and new tokens); the next-token logits (B, vocab)."""

    @abstractmethod
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one new token per row (B,); the next-token logits (B, vocab)."""

    @abstractmethod
    def keep(self, rows: torch.Tensor) -> None:
        """Drop every row of the batch (and its cache) but ``rows``."""


def _positions(valid: torch.Tensor) -> torch.Tensor:
    """Each token's position counted from its row's first real token (padding: 0)."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


class _OLMoDecoder(_Decoder):
    def prefill(self, input_ids: torch.Tensor, valid: torch.Tensor, capacity: int) -> torch.Tensor:
        module: OLMo = self.model.module  # type: ignore[assignment]
        batch, seq = input_ids.shape
        device = input_ids.device
        self.cache = KVCache(module.config.n_layers, capacity)
        self.valid = torch.ones(batch, capacity, dtype=torch.bool, device=device)
        self.valid[:, :seq] = valid
        self.padded = not bool(valid.all())
        position_ids = mask = None
        if self.padded:
            position_ids = _positions(valid)
            causal = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
            # A padding query sees itself too: no row of the mask may be empty.
            eye = torch.eye(seq, dtype=torch.bool, device=device)
            mask = (causal & valid[:, None, :]) | eye  # (B, T, T)
            mask = mask[:, None]
        self.next_position = valid.long().sum(-1)  # (B,)
        rows = torch.arange(batch, device=device)
        last = torch.full((batch,), seq - 1, device=device)
        logits = module(
            input_ids,
            position_ids=position_ids,
            attention_mask=mask,
            logits_at=(rows, last),
            kv_cache=self.cache,
        )
        return logits[:, : self.vocab]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        module: OLMo = self.model.module  # type: ignore[assignment]
        length = self.cache.length + 1
        mask = self.valid[:, None, None, :length] if self.padded else None
        logits = module(
            tokens[:, None],
            # Unpadded rows all sit at the cache's length, OLMo.forward's default.
            position_ids=self.next_position[:, None] if self.padded else None,
            attention_mask=mask,
            kv_cache=self.cache,
        )
        self.next_position = self.next_position + 1
        return logits[:, -1, : self.vocab]

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.keep(rows)
        self.valid = self.valid[rows]
        self.next_position = self.next_position[rows]


class _TransformersDecoder(_Decoder):
    """transformers' causal LMs, through their forward and their own cache."""

    def __init__(self, model: LanguageModel, vocab: int) -> None:
        super().__init__(model, vocab)
        parameters = inspect.signature(model.module.forward).parameters
        # transformers 5 renamed `past_key_values` to `cache` (the old name warns).
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.keep_last = "logits_to_keep" in parameters

    def _forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.keep_last:
            kwargs["logits_to_keep"] = 1
        out = self.model.module(
            input_ids=input_ids, attention_mask=self.mask, use_cache=True, **kwargs
        )
        self.past = out["cache"] if "cache" in out else out["past_key_values"]
        return out.logits[:, -1, : self.vocab]

    def prefill(self, input_ids: torch.Tensor, valid: torch.Tensor, capacity: int) -> torch.Tensor:
        self.mask = valid.long()
        position_ids = _positions(valid)
        self.next_position = valid.long().sum(-1)
        return self._forward(input_ids, position_ids=position_ids)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        position_ids = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self._forward(
            tokens[:, None], position_ids=position_ids, **{self.cache_argument: self.past}
        )

    def keep(self, rows: torch.Tensor) -> None:
        self.past.batch_select_indices(rows)
        self.mask = self.mask[rows]
        self.next_position = self.next_position[rows]


def _decoder(model: LanguageModel) -> _Decoder:
    vocab = min(model.tokenizer.vocab_size, model.vocab_size)
    if isinstance(model.module, OLMo):
        return _OLMoDecoder(model, vocab)
    return _TransformersDecoder(model, vocab)


@torch.no_grad()
def greedy_tokens(
    model: LanguageModel,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: Sequence[int],
    until: Sequence[Sequence[str]],
    eos_token_id: int | None,
) -> list[tuple[list[int], StopReason]]:
    """Greedy continuations of one batch of token-id prompts (each at least one token), with
    the reason each ended. Rows leave the batch as they finish."""
    device = model.device
    batch = len(prompts)
    longest = max(len(p) for p in prompts)
    pad = model.tokenizer.pad_token_id or 0
    input_ids = torch.full((batch, longest), pad, dtype=torch.long)
    valid = torch.zeros(batch, longest, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        input_ids[row, longest - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        valid[row, longest - len(prompt) :] = True
    decoder = _decoder(model)
    logits = decoder.prefill(input_ids.to(device), valid.to(device), longest + max(max_new_tokens))
    generated: list[list[int]] = [[] for _ in range(batch)]
    reasons: list[StopReason | None] = [None] * batch
    active = list(range(batch))  # the original row of each row of the batch on the device
    while True:
        tokens = logits.argmax(-1).tolist()
        still = []
        for position, (row, token) in enumerate(zip(active, tokens, strict=True)):
            if token == eos_token_id:
                reasons[row] = "eos"
                continue
            generated[row].append(token)
            stops = until[row]
            if stops and any(s in model.tokenizer.decode(generated[row]) for s in stops):
                reasons[row] = "stop"
            elif len(generated[row]) >= max_new_tokens[row]:
                reasons[row] = "length"
            else:
                still.append(position)
        if not still:
            break
        if len(still) < len(active):
            kept = torch.tensor(still, device=device)
            decoder.keep(kept)
            active = [active[p] for p in still]
            tokens = [tokens[p] for p in still]
        logits = decoder.step(torch.tensor(tokens, device=device))
    return [(ids, reason or "length") for ids, reason in zip(generated, reasons, strict=True)]


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of prompts of ``lengths`` in batches of ``batch_size``, longest first (ties in
    their order): the batches :func:`generate` runs."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate(
    model: LanguageModel, requests: Sequence[GenerationRequest], *, batch_size: int = 16
) -> list[Generation]:
    """Greedy generations for ``requests`` (in their order), ``batch_size`` prompts at a time,
    longest prompts first (see the module docstring for the rules)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    tokenizer = model.tokenizer
    prompts: list[list[int]] = []
    truncated: list[bool] = []
    encoded = tokenizer.encode_batch([r.context for r in requests]) if requests else []
    for request, ids in zip(requests, encoded, strict=True):
        room = model.max_length - request.max_new_tokens
        if room < 1:
            raise ValueError(
                f"max_new_tokens={request.max_new_tokens} leaves no room for a prompt in "
                f"{model.name}'s window of {model.max_length} tokens; ask for fewer"
            )
        if not ids:
            if tokenizer.eos_token_id is None:
                raise ValueError("an empty prompt needs the tokenizer's EOS token to start from")
            ids = [tokenizer.eos_token_id]  # as lm-eval does for an empty context
        truncated.append(len(ids) > room)
        prompts.append(list(ids[-room:]))
    results: list[Generation | None] = [None] * len(requests)
    for chunk in batches_by_length([len(p) for p in prompts], batch_size):
        outputs = greedy_tokens(
            model,
            [prompts[i] for i in chunk],
            max_new_tokens=[requests[i].max_new_tokens for i in chunk],
            until=[requests[i].until for i in chunk],
            eos_token_id=tokenizer.eos_token_id,
        )
        for i, (ids, reason) in zip(chunk, outputs, strict=True):
            text = cut_at_stops(tokenizer.decode(ids), requests[i].until)
            results[i] = Generation(text, ids, reason, len(prompts[i]), truncated[i])
    return [result for result in results if result is not None]
