"""Document length in characters, UTF-8 bytes, whitespace-separated words and lines."""

from __future__ import annotations

import polars as pl

from olmo_assets.curation.taggers.base import Tagger, attribute

__all__ = ["LengthTagger"]


class LengthTagger(Tagger):
    name = "length"

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        text = pl.col("text")
        return docs.select(
            "id",
            text.str.len_chars().cast(pl.Int64).alias(attribute(self.name, "chars")),
            text.str.len_bytes().cast(pl.Int64).alias(attribute(self.name, "bytes")),
            text.str.count_matches(r"\S+").cast(pl.Int64).alias(attribute(self.name, "words")),
            (text.str.count_matches("\n") + (text.str.len_chars() > 0).cast(pl.UInt32))
            .cast(pl.Int64)
            .alias(attribute(self.name, "lines")),
        )
