"""Writers for a curation run's output folder, deterministic byte for byte.

``documents/<source>/`` and ``validation/<source>/`` hold Dolma gzip JSON lines (gzip mtime 0),
``attributes/<tagger>/<source>/``, ``removed/<source>/`` and ``quarantine/<source>/`` hold
Parquet. Files roll over after ``rows_per_file`` rows. The caller writes the whole folder
under a temporary name and renames it when complete (see ``olmo_nn.atomic``).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["JsonlWriter", "ParquetWriter"]


class JsonlWriter:
    """Dolma documents as ``part-NNNNN.jsonl.gz``."""

    def __init__(self, folder: Path, *, rows_per_file: int = 100_000) -> None:
        self.folder = folder
        self.rows_per_file = rows_per_file
        self._part = -1
        self._rows = 0
        self._file: Any = None
        self._raw: Any = None
        self.num_rows = 0

    def _roll(self) -> None:
        self.close()
        self._part += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        self._raw = open(self.folder / f"part-{self._part:05d}.jsonl.gz", "wb")  # noqa: SIM115
        gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0, filename="", compresslevel=3)
        self._file = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
        self._rows = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if self._file is None or self._rows >= self.rows_per_file:
                self._roll()
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._rows += 1
            self.num_rows += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._raw.close()
            self._file = self._raw = None


class ParquetWriter:
    """Tables as ``part-NNNNN.parquet``; the schema is fixed by the first batch."""

    def __init__(self, folder: Path, *, rows_per_file: int = 1_000_000) -> None:
        self.folder = folder
        self.rows_per_file = rows_per_file
        self._part = -1
        self._rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.num_rows = 0

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        table = frame.to_arrow()
        if self._schema is None:
            self._schema = table.schema
        else:
            table = table.cast(self._schema)
        if self._writer is None or self._rows >= self.rows_per_file:
            self.close()
            self._part += 1
            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                self.folder / f"part-{self._part:05d}.parquet", self._schema
            )
            self._rows = 0
        self._writer.write_table(table)
        self._rows += table.num_rows
        self.num_rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
