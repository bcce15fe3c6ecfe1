"""Training data: Dolma documents in, OLMo token shards out, fixed-length instances back.

* :func:`read_documents` streams Dolma-format documents (JSON lines, gzip, zstd, Parquet),
  reporting bad input as :class:`ReadError` records instead of skipping or crashing.
* :class:`ShardWriter` / :class:`TokenShards` write and read OLMo's token-file format
  (raw memmaps, Dolma's ``.csv.gz`` metadata, a Parquet document index, a manifest).
* :class:`InstanceDataset` cuts shards into fixed-length training windows, OLMo-style.
* :func:`tokenize_documents` is the streaming pipeline behind ``olmo data tokenize``.
"""

from olmo_nn.data.documents import (
    Document,
    DocumentError,
    DocumentReader,
    ReadError,
    ReadReport,
    read_documents,
    resolve_inputs,
)
from olmo_nn.data.instances import InstanceDataset, InstanceDocument
from olmo_nn.data.shards import DocumentSpan, ShardWriter, TokenShards, token_dtype
from olmo_nn.data.tokenize import TokenizeSummary, tokenize_documents

__all__ = [
    "Document",
    "DocumentError",
    "DocumentReader",
    "DocumentSpan",
    "InstanceDataset",
    "InstanceDocument",
    "ReadError",
    "ReadReport",
    "ShardWriter",
    "TokenShards",
    "TokenizeSummary",
    "read_documents",
    "resolve_inputs",
    "token_dtype",
    "tokenize_documents",
]
