"""Paloma-style perplexity and bits per byte over a corpus of documents.

The rules (Paloma; Magnusson et al., 2023):

* Each document is scored on its own, never packed with another.
* It is prefixed with the tokenizer's BOS token, or with EOS when there is none. OLMo's
  tokenizer has no BOS, so OLMo (and Paloma's OLMo runs) prefix EOS: the first real token is
  predicted from the "start of document" state the model saw in training.
* Its tokens are split into disjoint windows of the model's max length, without overlap:
  window k takes inputs ``ids[k*L : (k+1)*L]`` and predicts ``ids[k*L+1 : (k+1)*L+1]``, so
  every document token is predicted exactly once (and the prefix token never).
* Per document we keep the sum of -log p (nats), the tokens predicted and the text's UTF-8
  bytes. Perplexity = exp(total nll / total tokens); bits per byte = total nll / (bytes * ln 2),
  which compares models with different tokenizers.

Aggregation: per (source, domain) when documents carry ``metadata["domain"]`` (or
``metadata["subdomain"]``); per source both micro (pooled over its documents) and macro (the
mean of its domains' values, Paloma's headline number); over all sources micro.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from olmo_nn.eval.models import LanguageModel

__all__ = [
    "ALL_SOURCES",
    "DocumentScore",
    "aggregate_perplexity",
    "evaluate_perplexity",
    "score_documents",
]

ALL_SOURCES = "all"
"""The ``source`` of the rows pooled over every document."""
DOMAIN_KEYS = ("domain", "subdomain")
"""Metadata keys naming a document's domain, first found wins."""
PERPLEXITY = "perplexity"
BITS_PER_BYTE = "bits_per_byte"
MACRO_SUFFIX = "_macro"
NO_DOMAIN = "(none)"
"""The domain of a document without one, in a source whose other documents have one."""


@dataclass(frozen=True)
class DocumentScore:
    """One document's negative log-likelihood and sizes."""

    id: str
    source: str
    domain: str | None
    nll: float
    """Sum over its tokens of -log p, in nats."""
    num_tokens: int
    """Tokens predicted (the document's tokens, without the BOS/EOS prefix)."""
    num_bytes: int
    """UTF-8 bytes of its text."""


@dataclass(frozen=True)
class _Window:
    document: int
    input_ids: list[int]
    targets: list[int]


def _prefix_id(model: LanguageModel) -> int:
    tokenizer = model.tokenizer
    bos = getattr(tokenizer, "bos_token_id", None)
    prefix = bos if bos is not None else tokenizer.eos_token_id
    if prefix is None:
        raise ValueError(
            f"tokenizer {tokenizer.name!r} has neither a BOS nor an EOS token to start documents"
        )
    return int(prefix)


def _domain_of(metadata: Mapping[str, Any] | None) -> str | None:
    for key in DOMAIN_KEYS:
        if metadata and metadata.get(key) is not None:
            return str(metadata[key])
    return None


def score_documents(
    model: LanguageModel, documents: Iterable[Mapping[str, Any]], *, batch_size: int = 8
) -> list[DocumentScore]:
    """Score each document (``id``, ``text``, ``source``, optional ``metadata``) on its own.

    A log-likelihood that is NaN or infinite (corrupted or diverged weights) is an error
    naming the model, never a perplexity.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    docs = list(documents)
    prefix = _prefix_id(model)
    window = model.max_length
    token_lists = model.tokenizer.encode_batch([str(d["text"]) for d in docs])
    windows: list[_Window] = []
    for index, tokens in enumerate(token_lists):
        ids = [prefix, *tokens]
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window + 1]
            windows.append(_Window(index, chunk[:-1], chunk[1:]))
    # Longest first, so similar lengths share a batch and padding stays small.
    windows.sort(key=lambda w: len(w.input_ids), reverse=True)
    nll = [0.0] * len(docs)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        for w, value in zip(batch, _window_nll(model, batch, pad_id), strict=True):
            nll[w.document] += value
    bad = sum(1 for value in nll if not math.isfinite(value))
    if bad:
        raise ValueError(
            f"{model.name}: the log-likelihood of {bad} of {len(nll)} documents is not finite "
            "(NaN or infinite): its weights are corrupted or diverged; no perplexity is reported"
        )
    return [
        DocumentScore(
            id=str(doc.get("id", index)),
            source=str(doc.get("source", "")),
            domain=_domain_of(doc.get("metadata")),
            nll=nll[index],
            num_tokens=len(token_lists[index]),
            num_bytes=len(str(doc["text"]).encode("utf-8")),
        )
        for index, doc in enumerate(docs)
    ]


def _window_nll(model: LanguageModel, batch: Sequence[_Window], pad_id: int) -> list[float]:
    width = max(len(w.input_ids) for w in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    for b, w in enumerate(batch):
        input_ids[b, : len(w.input_ids)] = torch.tensor(w.input_ids, dtype=torch.long)
    logits = model.logits(input_ids)  # (B, T, V)
    values = []
    for b, w in enumerate(batch):
        # One sequence at a time: float32 logits of a whole batch would be B*T*V*4 bytes.
        n = len(w.targets)
        targets = torch.tensor(w.targets, device=logits.device)
        values.append(float(F.cross_entropy(logits[b, :n].float(), targets, reduction="sum")))
    return values


def _metric_rows(
    source: str, domain: str | None, scores: Sequence[DocumentScore]
) -> list[dict[str, Any]]:
    nll = sum(s.nll for s in scores)
    num_tokens = sum(s.num_tokens for s in scores)
    num_bytes = sum(s.num_bytes for s in scores)
    rows = []
    if num_tokens:
        rows.append(_row(source, domain, PERPLEXITY, math.exp(nll / num_tokens), len(scores)))
    if num_bytes:
        bpb = nll / (num_bytes * math.log(2))
        rows.append(_row(source, domain, BITS_PER_BYTE, bpb, len(scores)))
    return rows


def _row(source: str, domain: str | None, metric: str, value: float, count: int) -> dict[str, Any]:
    return {"source": source, "domain": domain, "metric": metric, "value": value, "count": count}


def aggregate_perplexity(scores: Sequence[DocumentScore]) -> list[dict[str, Any]]:
    """Result rows ``{source, domain, metric, value, count}`` (count = documents).

    * ``(source, domain)`` for each domain: ``perplexity`` and ``bits_per_byte``.
    * ``(source, None)``: micro ``perplexity``/``bits_per_byte`` pooled over the source's
      documents, and, when it has domains, ``perplexity_macro``/``bits_per_byte_macro``: the
      unweighted mean over its domains (documents without a domain form ``NO_DOMAIN``).
    * ``(ALL_SOURCES, None)``: micro over every document.
    """
    by_source: dict[str, dict[str | None, list[DocumentScore]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for score in scores:
        by_source[score.source][score.domain].append(score)
    rows: list[dict[str, Any]] = []
    for source in sorted(by_source):
        domains = by_source[source]
        has_domains = any(d is not None for d in domains)
        domain_rows: list[dict[str, Any]] = []
        if has_domains:
            for domain in sorted(domains, key=lambda d: (d is None, d or "")):
                label = domain if domain is not None else NO_DOMAIN
                domain_rows.extend(_metric_rows(source, label, domains[domain]))
        rows.extend(domain_rows)
        everything = [s for group in domains.values() for s in group]
        rows.extend(_metric_rows(source, None, everything))
        for metric in (PERPLEXITY, BITS_PER_BYTE) if has_domains else ():
            values = [r["value"] for r in domain_rows if r["metric"] == metric]
            if values:
                mean = sum(values) / len(values)
                rows.append(_row(source, None, metric + MACRO_SUFFIX, mean, len(everything)))
    rows.extend(_metric_rows(ALL_SOURCES, None, list(scores)))
    return rows


def evaluate_perplexity(
    model: LanguageModel, documents: Iterable[Mapping[str, Any]], *, batch_size: int = 8
) -> list[dict[str, Any]]:
    """Paloma-style perplexity and bits per byte of ``model`` on ``documents``.

    Each document is a mapping with ``text`` and ``source`` (and ``id``, ``metadata``); see
    :func:`aggregate_perplexity` for the rows returned.
    """
    return aggregate_perplexity(score_documents(model, documents, batch_size=batch_size))
