"""A Bloom filter over 128-bit item digests, vectorized with numpy, persistable without pickle.

Deduplication and decontamination ask one question of a stream of items (URLs, texts,
paragraphs): has this item been seen before? A Bloom filter answers with no false negatives
and a configurable false-positive rate in a fixed amount of memory. Items enter as
digests, never as strings: :func:`hash_strings` turns strings into xxh3-128 digests (two
64-bit halves); the filter derives its ``k`` bit positions from the two halves by
Kirsch–Mitzenmacher double hashing, ``g_i = (h1 + i * h2) mod m``. xxhash is specified and
stable across versions and platforms, so a filter saved by one run is valid for the next.

:meth:`BloomFilter.add_and_check` is order-exact: for each item of a batch, in order, it
says whether the item was present *before that item* — earlier items of the same batch
included, whether they are copies of it or merely set all of its bits (a false positive that
a one-at-a-time filter would also report). The answer therefore does not depend on how a
stream is cut into batches.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

__all__ = ["BloomFilter", "hash_strings"]

_MAGIC = b"OLMOBLM1"
_FORMAT = "olmo-bloom-v1"
_HASH_SCHEME = "xxh3_128 digest halves (h1, h2 | 1); g_i = (h1 + i*h2) mod num_bits"
_U64 = np.dtype(np.uint64)


def hash_strings(items: Iterable[str]) -> np.ndarray:
    """xxh3-128 digests of the UTF-8 bytes of ``items`` as a ``(n, 2)`` uint64 array.

    Column 0 holds the high 64 bits of the canonical (big-endian) digest, column 1 the low.
    """
    digests = b"".join(map(xxhash.xxh3_128_digest, map(str.encode, items)))
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer, to derive a second hash from a single digest."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _digest_halves(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(h1, h2)`` from ``(n, 2)`` digest pairs or ``(n,)`` single 64-bit digests; h2 is odd."""
    hashes = np.asarray(hashes)
    if hashes.dtype != _U64:
        raise ValueError(f"hashes must be uint64 (see hash_strings), got dtype {hashes.dtype}")
    if hashes.ndim == 1:
        h1 = hashes
        h2 = _splitmix64(hashes)
    elif hashes.ndim == 2 and hashes.shape[1] == 2:
        h1, h2 = hashes[:, 0], hashes[:, 1]
    else:
        raise ValueError(f"hashes must have shape (n,) or (n, 2), got {hashes.shape}")
    # num_bits is a multiple of 8, so an odd step is never 0 mod num_bits: an item's probes
    # cannot all collapse onto one bit.
    return np.ascontiguousarray(h1), h2 | np.uint64(1)


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """A mask of the elements that differ from their predecessor (the first always does)."""
    starts = np.empty(sorted_values.size, dtype=bool)
    starts[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
    return starts


def _sort_pairs(bit: np.ndarray, item: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bit, item)`` pairs sorted by bit, then item (``item`` is an intp index array)."""
    item_bits = max(1, (num_items - 1).bit_length())
    if bit.size == 0 or int(bit.max()) >> (64 - item_bits) != 0:
        order = np.lexsort((item, bit))
        return bit[order], item[order]
    # One packed uint64 key sorts several times faster than an argsort.
    keys = np.sort((bit << np.uint64(item_bits)) | item.view(np.uint64))
    return keys >> np.uint64(item_bits), (keys & np.uint64((1 << item_bits) - 1)).view(np.intp)


class BloomFilter:
    """A bit array of ``num_bits`` bits probed at ``num_hashes`` positions per item.

    Sized with the standard formulas from the capacity and the false-positive rate wanted at
    that capacity: ``m = ceil(-n ln p / (ln 2)^2)`` (rounded up to whole bytes) and
    ``k = round(m / n * ln 2)``. Past ``expected_items`` the filter keeps working but its
    false-positive rate grows; :attr:`estimated_false_positive_rate` reports the current one.
    """

    def __init__(self, *, expected_items: int, false_positive_rate: float = 1e-5) -> None:
        if expected_items <= 0:
            raise ValueError(f"expected_items must be positive, got {expected_items}")
        if not 0.0 < false_positive_rate < 1.0:
            raise ValueError(f"false_positive_rate must be in (0, 1), got {false_positive_rate}")
        num_bits = math.ceil(-expected_items * math.log(false_positive_rate) / math.log(2) ** 2)
        num_bits = 8 * math.ceil(num_bits / 8)
        num_hashes = max(1, round(num_bits / expected_items * math.log(2)))
        self._init(num_bits, num_hashes, expected_items, false_positive_rate)
        self._bits = np.zeros(num_bits // 8, dtype=np.uint8)

    def _init(
        self, num_bits: int, num_hashes: int, expected_items: int, false_positive_rate: float
    ) -> None:
        self.num_bits = num_bits
        self.num_hashes = num_hashes
        self.expected_items = expected_items
        self.false_positive_rate = false_positive_rate
        #: Items that :meth:`add_and_check` reported new or :meth:`add` inserted (with repeats).
        self.num_added = 0
        self._probe_steps = np.arange(num_hashes, dtype=np.uint64)

    # -- probing -------------------------------------------------------------------------

    def _positions(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Bit positions of each item, ``(n, num_hashes)`` uint64 (arithmetic wraps mod 2^64)."""
        return (h1[:, None] + h2[:, None] * self._probe_steps) % np.uint64(self.num_bits)

    def _bits_set(self, positions: np.ndarray) -> np.ndarray:
        byte = self._bits[positions >> np.uint64(3)]
        return (byte & np.left_shift(np.uint8(1), (positions & np.uint64(7)).astype(np.uint8))) != 0

    def _set_sorted_bits(self, sorted_positions: np.ndarray) -> None:
        # Fancy-index |= loses updates when two bits share a byte: OR them per byte first.
        if sorted_positions.size == 0:
            return
        byte = sorted_positions >> np.uint64(3)
        mask = np.left_shift(np.uint8(1), (sorted_positions & np.uint64(7)).astype(np.uint8))
        starts = np.flatnonzero(_run_starts(byte))
        self._bits[byte[starts]] |= np.bitwise_or.reduceat(mask, starts)

    # -- public API ----------------------------------------------------------------------

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each item is (probably) in the filter; the filter is not changed."""
        h1, h2 = _digest_halves(hashes)
        return np.asarray(self._bits_set(self._positions(h1, h2)).all(axis=1))

    def add(self, hashes: np.ndarray) -> None:
        """Insert items (no answer; cheaper than :meth:`add_and_check`)."""
        h1, h2 = _digest_halves(hashes)
        self._set_sorted_bits(np.sort(self._positions(h1, h2), axis=None))
        self.num_added += h1.size

    def add_and_check(self, hashes: np.ndarray) -> np.ndarray:
        """For each item in order, whether it was already present; then insert them all.

        The first copy of an item in the batch is new (unless the filter held it), later
        copies are seen. Items are identified by their first 64-bit half, so two distinct
        items agreeing on it (probability 2^-64 per pair) count as one.
        """
        h1, h2 = _digest_halves(hashes)
        num_items = h1.size
        seen = np.ones(num_items, dtype=bool)
        if num_items == 0:
            return seen
        # The first copy of each distinct item: the smallest batch index among equal digests.
        order = np.argsort(h1)
        sorted_h1 = h1[order]
        group_starts = np.flatnonzero(_run_starts(sorted_h1))
        first = np.sort(np.minimum.reduceat(order, group_starts))
        positions = self._positions(h1[first], h2[first])
        item, probe = np.nonzero(~self._bits_set(positions))
        clear_bit = positions[item, probe]
        sorted_bit, sorted_item = _sort_pairs(clear_bit, item, first.size)
        # An item is new exactly when it is the earliest of the batch to set one of the bits
        # still clear; (bit, item) pairs sorted by bit then item put that item first.
        first_seen = np.ones(first.size, dtype=bool)
        first_seen[sorted_item[_run_starts(sorted_bit)]] = False
        seen[first] = first_seen
        self._set_sorted_bits(sorted_bit)
        self.num_added += first.size - int(first_seen.sum())
        return seen

    # -- reporting -----------------------------------------------------------------------

    @property
    def fill_ratio(self) -> float:
        """The fraction of bits set."""
        return int(np.bitwise_count(self._bits).sum(dtype=np.int64)) / self.num_bits

    @property
    def estimated_false_positive_rate(self) -> float:
        """The chance that an unseen item is reported seen now: ``fill_ratio ** num_hashes``."""
        return self.fill_ratio**self.num_hashes

    def stats(self) -> dict[str, Any]:
        """Size, load and error rates, for logs and asset metadata."""
        return {
            "num_bits": self.num_bits,
            "num_bytes": self._bits.nbytes,
            "num_hashes": self.num_hashes,
            "expected_items": self.expected_items,
            "configured_false_positive_rate": self.false_positive_rate,
            "num_added": self.num_added,
            "fill_ratio": self.fill_ratio,
            "estimated_false_positive_rate": self.estimated_false_positive_rate,
        }

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the filter: magic, header length (u32 LE), JSON header, then the raw bits.

        Written to a temporary file and renamed, so a crash never leaves a torn filter.
        """
        path = Path(path)
        header = json.dumps(
            {
                "format": _FORMAT,
                "hash": _HASH_SCHEME,
                "num_bits": self.num_bits,
                "num_hashes": self.num_hashes,
                "expected_items": self.expected_items,
                "false_positive_rate": self.false_positive_rate,
                "num_added": self.num_added,
            }
        ).encode()
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as out:
            out.write(_MAGIC)
            out.write(len(header).to_bytes(4, "little"))
            out.write(header)
            out.write(self._bits.tobytes())
        partial.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BloomFilter:
        """Read a filter written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no Bloom filter at {path}")
        with path.open("rb") as data:
            magic = data.read(len(_MAGIC))
            if magic != _MAGIC:
                raise ValueError(f"{path} is not a Bloom filter written by BloomFilter.save")
            header_length = int.from_bytes(data.read(4), "little")
            header = json.loads(data.read(header_length))
            if header.get("format") != _FORMAT or header.get("hash") != _HASH_SCHEME:
                raise ValueError(
                    f"{path} has format {header.get('format')!r} and hash scheme "
                    f"{header.get('hash')!r}; this code reads {_FORMAT!r} with {_HASH_SCHEME!r}"
                )
            bits = np.fromfile(data, dtype=np.uint8)
        if bits.size * 8 != header["num_bits"]:
            raise ValueError(
                f"{path} holds {bits.size * 8} bits but its header says {header['num_bits']}; "
                "the file is truncated"
            )
        bloom = cls.__new__(cls)
        bloom._init(
            header["num_bits"],
            header["num_hashes"],
            header["expected_items"],
            header["false_positive_rate"],
        )
        bloom.num_added = header["num_added"]
        bloom._bits = bits
        return bloom
