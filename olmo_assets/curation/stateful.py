"""The order-dependent taggers of a curation run: deduplication and decontamination.

They keep state across batches and sources (what has been seen), so the pipeline runs them in
the main process, on batches in input order: the first copy of anything is the one kept.
"""

from __future__ import annotations

import polars as pl

from olmo_assets.curation.config import CurationConfig

__all__ = ["StatefulTaggers"]


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

    def tag(self, docs: pl.DataFrame, *, exempt: bool = False) -> pl.DataFrame:
        """Attributes of a batch (``id`` first), updating the state with it."""
        attributes = docs.select("id")
        if self.dedup is not None:
            attributes = attributes.hstack(self.dedup.tag(docs).drop("id"))
        if self.decontamination is not None:
            attributes = attributes.hstack(self.decontamination.tag(docs).drop("id"))
        return attributes
