"""The mixer: decisions over attributes, span replacement, sampling and validation splits.

Everything here is a pure function of (documents, attributes, config, seed), so a rerun
gives the same result. Rules are evaluated by DuckDB over the batch's attribute table; a
document removed by several rules is charged to the earliest stage (``config.STAGES``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import xxhash

from olmo_assets.curation.config import STAGES, RuleConfig, SpanReplacementConfig

__all__ = ["Decisions", "apply_spans", "decide", "sample_copies", "validation_mask"]


@dataclass
class Decisions:
    """Per document (batch order): ``stage`` and ``reason`` are None when it is kept."""

    stage: list[str | None]
    reason: list[str | None]


def decide(attributes: pl.DataFrame, rules: list[RuleConfig]) -> Decisions:
    """Evaluate ``rules`` on an attribute table (one row per document)."""
    count = attributes.height
    stage: list[str | None] = [None] * count
    reason: list[str | None] = [None] * count
    if not rules or count == 0:
        return Decisions(stage, reason)
    ordered = sorted(
        rules, key=lambda r: STAGES.index(r.stage)
    )  # stable: listed order within a stage
    selects = ", ".join(
        f"coalesce(({rule.remove_if}), false) AS r{i}" for i, rule in enumerate(ordered)
    )
    import duckdb  # here, not at the top: tag and dedup runs and the tagging workers
    # never decide, and importing DuckDB is a large part of a worker's start

    connection = duckdb.connect()
    try:
        connection.register("attributes", attributes.to_arrow())
        try:
            fired = connection.execute(f"SELECT {selects} FROM attributes").fetchnumpy()
        except duckdb.Error as error:
            raise ValueError(
                f"a removal rule does not evaluate over the attributes ({error}); rules: "
                + "; ".join(f"{r.name}: {r.remove_if}" for r in ordered)
            ) from None
    finally:
        connection.close()
    matrix = np.stack([np.asarray(fired[f"r{i}"], dtype=bool) for i in range(len(ordered))], axis=1)
    any_fired = matrix.any(axis=1)
    first = matrix.argmax(axis=1)
    for row in np.flatnonzero(any_fired):
        rule = ordered[int(first[row])]
        stage[row], reason[row] = rule.stage, rule.name
    return Decisions(stage, reason)


def apply_spans(
    text: str, spans_by_replacement: list[tuple[list[dict[str, int]] | None, SpanReplacementConfig]]
) -> str:
    """``text`` with each configured span replaced; overlapping later spans are skipped."""
    edits: list[tuple[int, int, str]] = []
    for spans, replacement in spans_by_replacement:
        if not spans:
            continue
        if replacement.max_spans is not None and len(spans) > replacement.max_spans:
            continue
        edits.extend((int(s["start"]), int(s["end"]), replacement.replacement) for s in spans)
    if not edits:
        return text
    edits.sort()
    pieces: list[str] = []
    position = 0
    for start, end, new in edits:
        if start < position:
            continue  # overlaps an applied edit
        pieces.append(text[position:start])
        pieces.append(new)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _unit_interval(seed: int, salt: str, source: str, ids: list[str]) -> np.ndarray:
    """A reproducible uniform number in [0, 1) per document id."""
    return np.array(
        [
            xxhash.xxh64_intdigest(f"{seed}:{salt}:{source}:{doc_id}".encode()) / 2.0**64
            for doc_id in ids
        ]
    )


def validation_mask(ids: list[str], *, source: str, fraction: float, seed: int) -> np.ndarray:
    """Which documents go to the source's validation split (by a hash of seed and id)."""
    if fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    return _unit_interval(seed, "validation", source, ids) < fraction


def sample_copies(ids: list[str], *, source: str, rate: float, seed: int) -> np.ndarray:
    """Copies of each document in the mix: floor(rate), plus one with probability frac(rate)."""
    whole = int(np.floor(rate))
    fraction = rate - whole
    copies = np.full(len(ids), whole, dtype=np.int64)
    if fraction > 0:
        copies += _unit_interval(seed, "sample", source, ids) < fraction
    return copies
