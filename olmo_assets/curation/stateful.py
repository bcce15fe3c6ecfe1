"""The order-dependent taggers of a curation run: deduplication and decontamination.

They keep state across batches and sources (what has been seen), so the pipeline runs them in
the main process, on batches in input order: the first copy of anything is the one kept.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from olmo_assets.curation.config import CurationConfig

__all__ = ["OnlineMinHash", "StatefulTaggers"]


def _mix_words(words: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of uint64 words (multiply-xorshift, wrapping arithmetic)."""
    multiplier = np.uint64(0x9E3779B97F4A7C15)
    state = np.full(words.shape[0], np.uint64(0x243F6A8885A308D3))
    for column in range(words.shape[1]):
        state = (state ^ words[:, column]) * multiplier
        state ^= state >> np.uint64(29)
    return state


class OnlineMinHash:
    """Single-pass fuzzy dedup: a document is a near-duplicate when one of its LSH bands was
    seen in an earlier document (MinHash over 5-word shingles, 14 bands x 8 rows).

    Bands go into one Bloom filter per band, so memory is fixed by ``capacity`` whatever the
    corpus size (the LSHBloom approach); a band false positive (rate 1e-6 per band at
    capacity) makes a false near-duplicate. Documents without words are never duplicates.
    """

    def __init__(self, *, capacity: int, false_positive_rate: float = 1e-6) -> None:
        from olmo_assets.curation.bloom import BloomFilter
        from olmo_assets.curation.minhash import MinHashConfig, MinHasher

        self.config = MinHashConfig()
        self.hasher = MinHasher(self.config)
        self.bands = [
            BloomFilter(expected_items=capacity, false_positive_rate=false_positive_rate)
            for _ in range(self.config.num_bands)
        ]

    def add_and_check(self, texts: list[str]) -> np.ndarray:
        from olmo_assets.curation.minhash import NO_SIGNATURE

        signatures = self.hasher.signatures(texts)  # (n, bands * rows) uint32
        has_words = ~(signatures == NO_SIGNATURE).all(axis=1)
        rows = self.config.rows_per_band
        duplicate = np.zeros(len(texts), dtype=bool)
        for band, bloom in enumerate(self.bands):
            block = np.ascontiguousarray(signatures[has_words, band * rows : (band + 1) * rows])
            keys = np.frombuffer(block.tobytes(), dtype=np.uint64).reshape(len(block), -1)
            seen = bloom.add_and_check(_mix_words(keys))
            duplicate[np.flatnonzero(has_words)] |= seen
        return duplicate


class StatefulTaggers:
    """Dedup (URL, exact text, paragraphs) and Paloma decontamination, as configured."""

    def __init__(self, config: CurationConfig) -> None:
        dedup = config.dedup
        self.dedup = None
        if dedup.url or dedup.exact or dedup.paragraphs:
            from olmo_assets.curation import dedup as dedup_module

            self.dedup = dedup_module.Deduplicator(
                dedup_module.DedupConfig(
                    url=dedup.url,
                    exact=dedup.exact,
                    paragraphs=dedup.paragraphs,
                    false_positive_rate=dedup.false_positive_rate,
                    expected_documents=dedup.expected_documents,
                    expected_paragraphs=dedup.expected_paragraphs,
                )
            )
        self.decontamination = None
        if config.decontamination_paths:
            from olmo_assets.curation.decontaminate import ContaminationIndex

            exempt = {source.name for source in config.sources if source.code}
            self.decontamination = ContaminationIndex.from_jsonl(
                config.decontamination_paths, exempt_sources=exempt
            )

        self.fuzzy = OnlineMinHash(capacity=dedup.expected_documents) if dedup.minhash else None

    def tag(self, docs: pl.DataFrame, *, exempt: bool = False) -> pl.DataFrame:
        """Attributes of a batch (``id`` first), updating the state with it."""
        attributes = docs.select("id")
        if self.dedup is not None:
            attributes = attributes.hstack(self.dedup.tag(docs).drop("id"))
        if self.fuzzy is not None:
            attributes = attributes.with_columns(
                pl.Series("minhash__is_duplicate", self.fuzzy.add_and_check(docs["text"].to_list()))
            )
        if self.decontamination is not None:
            attributes = attributes.hstack(self.decontamination.tag(docs).drop("id"))
        return attributes
