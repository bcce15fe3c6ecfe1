"""Fixed-length training instances over token shards, cut the way OLMo's MemMapDataset cuts them.

Each token file is split into consecutive windows of ``sequence_length`` tokens; the
remainder at the end of each file (fewer than ``sequence_length`` tokens) is dropped.
Instance indices run across files in file order: file 0's windows first, then file 1's.
Windows ignore document boundaries (documents are separated by EOS inside a window), so
:meth:`InstanceDataset.documents_in_instance` says which documents a window holds — a
binary search over the document index, so a trainer can map any batch back to its
source documents cheaply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from olmo_nn.data.shards import TokenShards

__all__ = ["InstanceDataset", "InstanceDocument"]


@dataclass(frozen=True, slots=True)
class InstanceDocument:
    """A document (or the part of it) inside one instance.

    ``start``/``end`` are token positions within the instance (end exclusive); ``offset``
    is where that part begins inside the document (0 unless the document started in an
    earlier window); ``index`` is the document's row in the shards' index.
    """

    source: str
    id: str
    start: int
    end: int
    offset: int
    index: int


class InstanceDataset:
    """Fixed-length windows of ``sequence_length`` tokens over a :class:`TokenShards`.

    ``dataset[i]`` is an ``int64`` copy of instance ``i`` (what a model's embedding takes,
    as OLMo's ``MemMapDataset`` returns ``torch.long``); :meth:`raw` is the same window as a
    read-only view in the on-disk dtype (uint16/uint32), with no copy.
    """

    def __init__(self, shards: TokenShards | str | os.PathLike[str], sequence_length: int) -> None:
        if sequence_length <= 0:
            raise ValueError(
                f"sequence_length={sequence_length}: must be a positive number of tokens"
            )
        self.shards = shards if isinstance(shards, TokenShards) else TokenShards(shards)
        self.sequence_length = sequence_length
        per_file = self.shards.file_num_tokens // sequence_length
        #: Index of the first instance of each file (and the total at the end).
        self.file_first_instance = np.concatenate([[0], np.cumsum(per_file)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.file_first_instance[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """``(file number, first token in that file)`` of instance ``i``."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(
                f"instance {i} is out of range: {len(self)} instances of {self.sequence_length} tokens"
            )
        i %= n
        file = int(np.searchsorted(self.file_first_instance, i, side="right")) - 1
        return file, (i - int(self.file_first_instance[file])) * self.sequence_length

    def raw(self, i: int) -> np.ndarray:
        """Instance ``i`` as a read-only view of the token file (uint16 or uint32)."""
        file, start = self.locate(i)
        return self.shards.memmaps[file][start : start + self.sequence_length]

    def __getitem__(self, i: int) -> np.ndarray:
        """Instance ``i`` as a new ``int64`` array of ``sequence_length`` ids."""
        return self.raw(i).astype(np.int64)

    def documents_in_instance(self, i: int) -> list[InstanceDocument]:
        """Every document overlapping instance ``i``, in order, with its span in the window."""
        file, start = self.locate(i)
        window_start = int(self.shards.file_offsets[file]) + start
        window_end = window_start + self.sequence_length
        columns = self.shards.index_arrays
        found = []
        for row in self.shards.documents_overlapping(window_start, window_end):
            doc_start = int(columns["global_start"][row])
            doc_end = int(columns["global_end"][row])
            begin = max(doc_start, window_start)
            found.append(
                InstanceDocument(
                    source=columns["source"][row].as_py(),
                    id=columns["id"][row].as_py(),
                    start=begin - window_start,
                    end=min(doc_end, window_end) - window_start,
                    offset=begin - doc_start,
                    index=row,
                )
            )
        return found

    def __repr__(self) -> str:
        return (
            f"InstanceDataset({self.shards.directory!s}, sequence_length={self.sequence_length}, "
            f"num_instances={len(self)})"
        )
