"""Fuzzy deduplication: MinHash signatures over word shingles, LSH banding, union-find.

Two documents whose sets of 5-word shingles have Jaccard similarity ``s`` share one band of
``rows`` MinHash values with probability ``s**rows``, so they land in a common bucket of at
least one of ``bands`` bands with probability ``1 - (1 - s**rows)**bands``: with 14 bands of
8 rows, 0.56 at ``s = 0.7``, 0.92 at ``s = 0.8``, 0.05 at ``s = 0.5`` and 0.009 at ``s = 0.4``.
Documents that share a bucket are joined, transitively, into clusters; a cluster's id is the
id of its first document in corpus order, and every later member is a duplicate.

It takes two passes. :meth:`MinHashDeduplicator.add` computes the signatures of each batch
(``bands * rows`` uint32 per document, 448 bytes by default) and keeps them in memory or
appends them to a file; :meth:`MinHashDeduplicator.clusters` bands them and clusters the
whole corpus. The order contract is :mod:`~olmo_assets.curation.dedup`'s: batches in the run's
fixed order, since "first" decides which copy is kept. :meth:`~MinHashDeduplicator.save`
and :meth:`~MinHashDeduplicator.load` carry the signatures to a later run, whose documents
then come after them: one that joins an earlier run's cluster is a duplicate.

The curation pipeline uses this clusterer when ``dedup.minhash_method`` is ``clusters``
(:mod:`~olmo_assets.curation.stateful`); its default, ``online``, is a one-pass variant.

**Definitions.** Words are ``text.lower().split()`` (Unicode whitespace). A shingle is 5
consecutive words; a document with 1 to 4 words has one shingle of all of them, and one
without words has no signature and is its own cluster. Each distinct word is hashed once with
xxh64 (stable across versions); a shingle's 64-bit hash combines its words' hashes
(polynomial, then the murmur3 finalizer), reduced mod ``p = 2**32 - 5`` (prime). Permutation
``i`` maps ``h`` to ``(a_i * h + b_i) mod p`` with ``a_i``, ``b_i`` drawn from a seeded
generator; products stay below 2^64, so the arithmetic is exact in uint64.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import xxhash

from olmo_assets.curation.taggers.base import attribute

__all__ = ["MinHashConfig", "MinHashDeduplicator", "MinHasher", "cluster_signatures"]

#: The prime modulus of the permutations (the largest prime below 2^32).
PRIME = (1 << 32) - 5
#: The signature row of a document without words (no permuted value reaches it).
NO_SIGNATURE = np.uint32(0xFFFFFFFF)
# Shingle rows permuted at once: (rows, num_perm) uint64 stays in cache.
_CHUNK_ROWS = 1024
# Distinct words remembered between batches before the cache is cleared.
_MAX_CACHED_WORDS = 1 << 20
_MIX = np.uint64(0x100000001B3)
_HEADER_FILE = "minhash.json"
_SIGNATURES_FILE = "signatures.u32"
_FORMAT = "olmo-minhash-clusters-v1"


@dataclass(frozen=True, kw_only=True)
class MinHashConfig:
    """Signature length, banding and shingling of the fuzzy deduplication."""

    num_bands: int = 14
    """LSH bands; more bands catch less similar pairs."""
    rows_per_band: int = 8
    """MinHash values per band; more rows demand more similarity."""
    shingle_words: int = 5
    """Words per shingle."""
    seed: int = 0
    """Seed of the permutations; signatures are comparable only under the same seed."""

    def __post_init__(self) -> None:
        for field in ("num_bands", "rows_per_band", "shingle_words"):
            value = getattr(self, field)
            if value <= 0:
                raise ValueError(f"{field} must be positive, got {value}")

    @property
    def num_perm(self) -> int:
        """Permutations, i.e. uint32 values per signature: ``num_bands * rows_per_band``."""
        return self.num_bands * self.rows_per_band


class _WordHashes(dict[str, int]):
    """xxh64 of each distinct word, computed once."""

    def __missing__(self, word: str) -> int:
        value = self[word] = xxhash.xxh64_intdigest(word.encode())
        return value


def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finalizer: every input bit affects every output bit."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


class MinHasher:
    """Computes MinHash signatures of texts under one :class:`MinHashConfig`."""

    def __init__(self, config: MinHashConfig | None = None) -> None:
        self.config = config or MinHashConfig()
        rng = np.random.default_rng(self.config.seed)
        self._a = rng.integers(1, PRIME, self.config.num_perm, dtype=np.uint64)
        self._b = rng.integers(0, PRIME, self.config.num_perm, dtype=np.uint64)
        self._word_hashes = _WordHashes()

    def shingle_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes (uint64, ``< PRIME``) of all texts, and the index of each one's text."""
        if len(self._word_hashes) > _MAX_CACHED_WORDS:
            self._word_hashes.clear()
        words_per_text = [text.lower().split() for text in texts]
        num_words = np.fromiter(map(len, words_per_text), dtype=np.int64, count=len(texts))
        word_hashes = np.fromiter(
            map(self._word_hashes.__getitem__, chain.from_iterable(words_per_text)),
            dtype=np.uint64,
            count=int(num_words.sum()),
        )
        width = self.config.shingle_words
        # A text of n >= width words has n - width + 1 shingles; a shorter one, one of n words.
        num_shingles = np.where(num_words >= width, num_words - width + 1, np.minimum(num_words, 1))
        length = np.minimum(num_words, width)
        shingle_text = np.repeat(np.arange(len(texts), dtype=np.int64), num_shingles)
        first_word = np.cumsum(num_words) - num_words
        first_shingle = np.cumsum(num_shingles) - num_shingles
        start = first_word[shingle_text] + (
            np.arange(shingle_text.size, dtype=np.int64) - first_shingle[shingle_text]
        )
        length = length[shingle_text]
        combined = np.zeros(shingle_text.size, dtype=np.uint64)
        if word_hashes.size:
            last = word_hashes.size - 1
            for offset in range(width):
                word = np.where(
                    offset < length, word_hashes[np.minimum(start + offset, last)], np.uint64(0)
                )
                combined = combined * _MIX + word
        return _fmix64(combined) % np.uint64(PRIME), shingle_text

    def signatures(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), num_perm)`` uint32 signatures; :data:`NO_SIGNATURE` rows for no words."""
        hashes, shingle_text = self.shingle_hashes(texts)
        signatures = np.full((len(texts), self.config.num_perm), NO_SIGNATURE, dtype=np.uint32)
        buffer = np.empty((_CHUNK_ROWS, self.config.num_perm), dtype=np.uint64)
        prime = np.uint64(PRIME)
        for lo in range(0, hashes.size, _CHUNK_ROWS):
            chunk = hashes[lo : lo + _CHUNK_ROWS, None]
            permuted = buffer[: chunk.shape[0]]
            np.multiply(chunk, self._a, out=permuted)  # < 2^32 * 2^32: exact
            permuted += self._b
            np.remainder(permuted, prime, out=permuted)
            owner = shingle_text[lo : lo + _CHUNK_ROWS]
            segment = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            minima = np.minimum.reduceat(permuted, segment, axis=0).astype(np.uint32)
            rows = owner[segment]
            # Only a text straddling two chunks already holds values; min() merges them.
            np.minimum(signatures[rows], minima, out=minima)
            signatures[rows] = minima
        return signatures


def _union_find(num_items: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The smallest index in each item's connected component, for the edges ``left--right``.

    Union-find, vectorized: hook every edge's larger root under its smaller one, compress
    paths by pointer jumping, repeat until every edge joins equal roots.
    """
    root = np.arange(num_items, dtype=np.int64)
    while left.size:
        left_root, right_root = root[left], root[right]
        differ = left_root != right_root
        if not differ.any():
            break
        np.minimum.at(
            root,
            np.maximum(left_root[differ], right_root[differ]),
            np.minimum(left_root[differ], right_root[differ]),
        )
        while True:
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped
    return root


def cluster_signatures(signatures: np.ndarray, config: MinHashConfig) -> np.ndarray:
    """For each row, the index of the first row of its LSH cluster (itself if alone).

    Rows equal to :data:`NO_SIGNATURE` throughout join no cluster.
    """
    num_docs = signatures.shape[0]
    if signatures.shape[1:] != (config.num_perm,):
        raise ValueError(
            f"signatures have shape {signatures.shape}, expected (n, {config.num_perm}) "
            f"for {config.num_bands} bands of {config.rows_per_band} rows"
        )
    has_signature = np.flatnonzero((signatures != NO_SIGNATURE).any(axis=1))
    rows = config.rows_per_band
    left, right = [], []
    for band in range(config.num_bands):
        values = np.ascontiguousarray(signatures[has_signature, band * rows : (band + 1) * rows])
        # Exact bucket keys: the band's bytes, compared as one opaque value.
        keys = values.view(np.dtype((np.void, 4 * rows))).ravel()
        _, first, bucket = np.unique(keys, return_index=True, return_inverse=True)
        bucket_first = first[bucket.ravel()]
        joined = np.flatnonzero(bucket_first != np.arange(has_signature.size))
        left.append(has_signature[joined])
        right.append(has_signature[bucket_first[joined]])
    return _union_find(num_docs, np.concatenate(left), np.concatenate(right))


class MinHashDeduplicator:
    """Two-pass fuzzy deduplication of one run: :meth:`add` each batch, then :meth:`clusters`.

    Signatures live in memory, or with ``spill_path`` are appended to that file (raw uint32,
    ``num_perm`` per document) and memory-mapped for the clustering pass. After :meth:`load`,
    the saved signatures of earlier runs come first (``num_prior`` documents).
    """

    name: ClassVar[str] = "minhash"

    def __init__(
        self,
        config: MinHashConfig | None = None,
        *,
        spill_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.hasher = MinHasher(config)
        self.config = self.hasher.config
        self._ids: list[pl.Series] = []
        self._signatures: list[np.ndarray] = []
        self._spill_path = None if spill_path is None else Path(spill_path)
        if self._spill_path is not None:
            self._spill_path.parent.mkdir(parents=True, exist_ok=True)
            self._spill_path.write_bytes(b"")
        #: Documents of earlier runs (from :meth:`load`); they precede this run's.
        self.num_prior = 0
        #: Documents added in this run.
        self.num_docs = 0

    def add(self, docs: pl.DataFrame) -> None:
        """Pass 1: signatures of the next batch of the run (in the run's fixed order)."""
        signatures = self.hasher.signatures(docs.get_column("text").to_list())
        self._ids.append(docs.get_column("id"))
        self.num_docs += docs.height
        if self._spill_path is None:
            self._signatures.append(signatures)
        else:
            with self._spill_path.open("ab") as out:
                out.write(signatures.tobytes())

    def _all_signatures(self) -> np.ndarray:
        total = self.num_prior + self.num_docs
        if total == 0:
            return np.empty((0, self.config.num_perm), dtype=np.uint32)
        if self._spill_path is None:
            return np.concatenate(self._signatures)
        return np.memmap(
            self._spill_path, dtype=np.uint32, mode="r", shape=(total, self.config.num_perm)
        )

    def clusters(self) -> pl.DataFrame:
        """Pass 2: ``id``, ``minhash__cluster_id`` and ``minhash__is_duplicate`` of this run's
        documents; the cluster id is null when the cluster's first document is an earlier
        run's (whose ids are not kept)."""
        first = cluster_signatures(self._all_signatures(), self.config)[self.num_prior :]
        ids = pl.concat(self._ids) if self._ids else pl.Series("id", [], dtype=pl.String)
        local = first - self.num_prior
        earlier = pl.Series([None] * self.num_docs, dtype=pl.String)
        cluster_id = ids.gather(np.maximum(local, 0)).zip_with(pl.Series(local >= 0), earlier)
        return pl.DataFrame(
            [
                ids,
                cluster_id.alias(attribute(self.name, "cluster_id")),
                pl.Series(
                    attribute(self.name, "is_duplicate"),
                    first != np.arange(self.num_prior, self.num_prior + self.num_docs),
                ),
            ]
        )

    def stats(self) -> dict[str, Any]:
        """Documents seen (earlier runs' included) and the bytes their signatures take."""
        total = self.num_prior + self.num_docs
        return {
            "num_docs": total,
            "num_prior": self.num_prior,
            "num_perm": self.config.num_perm,
            "signature_bytes": total * self.config.num_perm * 4,
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write every signature (earlier runs' and this run's) and the config to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._spill_path is not None:
            shutil.copyfile(self._spill_path, directory / _SIGNATURES_FILE)
        else:
            self._all_signatures().tofile(directory / _SIGNATURES_FILE)
        header = {
            "format": _FORMAT,
            "config": asdict(self.config),
            "num_docs": self.num_prior + self.num_docs,
        }
        (directory / _HEADER_FILE).write_text(json.dumps(header, indent=2) + "\n")

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        spill_path: str | os.PathLike[str] | None = None,
    ) -> MinHashDeduplicator:
        """Continue from what :meth:`save` wrote: its documents come before any :meth:`add`."""
        directory = Path(directory)
        header_path = directory / _HEADER_FILE
        if not header_path.is_file():
            raise FileNotFoundError(
                f"no saved MinHash signatures in {directory} (no {_HEADER_FILE})"
            )
        header = json.loads(header_path.read_text())
        if header.get("format") != _FORMAT:
            raise ValueError(f"{header_path} has format {header.get('format')!r}, not {_FORMAT!r}")
        deduplicator = cls(MinHashConfig(**header["config"]), spill_path=spill_path)
        path = directory / _SIGNATURES_FILE
        num_docs, num_perm = int(header["num_docs"]), deduplicator.config.num_perm
        size = path.stat().st_size if path.is_file() else -1
        if size != num_docs * num_perm * 4:
            raise ValueError(
                f"{path} holds {size} bytes, not the {num_docs * num_perm * 4} of {num_docs} "
                f"signatures of {num_perm} uint32 its header promises; the state is damaged"
            )
        if deduplicator._spill_path is not None:
            shutil.copyfile(path, deduplicator._spill_path)
        else:
            deduplicator._signatures.append(
                np.fromfile(path, dtype=np.uint32).reshape(num_docs, num_perm)
            )
        deduplicator.num_prior = num_docs
        return deduplicator
