"""The Bloom filter: sizing, no false negatives, its error rate, order within a batch, files."""

from __future__ import annotations

import numpy as np
import pytest

from olmo_assets.curation.bloom import BloomFilter, hash_strings


def _items(prefix: str, count: int) -> np.ndarray:
    return hash_strings(f"{prefix}-{i}" for i in range(count))


def test_sizing_follows_the_standard_formulas() -> None:
    bloom = BloomFilter(expected_items=1000, false_positive_rate=0.01)
    # m = ceil(1000 * ln(100) / ln(2)^2) = 9586, rounded up to whole bytes; k = round(m/n ln 2)
    assert bloom.num_bits == 9592
    assert bloom.num_hashes == 7


def test_hash_strings_is_xxh3_128_of_utf8() -> None:
    digests = hash_strings(["", "héllo"])
    assert digests.shape == (2, 2) and digests.dtype == np.uint64
    assert int(digests[0, 0]) << 64 | int(digests[0, 1]) == 0x99AA06D3014798D86001C324468D497F


def test_no_false_negatives_and_measured_false_positive_rate() -> None:
    bloom = BloomFilter(expected_items=10_000, false_positive_rate=0.01)
    seen = _items("in", 10_000)
    bloom.add(seen)
    assert bloom.contains(seen).all()
    assert bloom.add_and_check(seen).all()
    measured = bloom.contains(_items("out", 100_000)).mean()
    assert 0.007 < measured < 0.013
    assert bloom.estimated_false_positive_rate == pytest.approx(0.01, rel=0.2)
    assert bloom.fill_ratio == pytest.approx(0.5, abs=0.02)
    assert bloom.stats()["num_added"] == 10_000


def test_first_copy_in_a_batch_is_new_later_copies_are_seen() -> None:
    bloom = BloomFilter(expected_items=100, false_positive_rate=1e-6)
    a, b, c, d = hash_strings(["a", "b", "c", "d"])
    assert bloom.add_and_check(np.stack([a, b, a, c, b, a])).tolist() == [
        False,
        False,
        True,
        False,
        True,
        True,
    ]
    assert bloom.add_and_check(np.stack([c, d, d])).tolist() == [True, False, True]


def test_answers_do_not_depend_on_batch_boundaries() -> None:
    # A tiny, overfull filter: many false positives, some caused by items of the same batch.
    items = _items("x", 400)
    items[200:260] = items[:60]
    whole = BloomFilter(expected_items=40, false_positive_rate=0.1)
    one_by_one = BloomFilter(expected_items=40, false_positive_rate=0.1)
    batched = whole.add_and_check(items)
    sequential = [one_by_one.add_and_check(items[i : i + 1])[0] for i in range(len(items))]
    assert batched.tolist() == sequential
    assert 60 < batched.sum() < 400  # duplicates plus a good share of false positives


def test_single_64_bit_digests_are_accepted() -> None:
    bloom = BloomFilter(expected_items=100, false_positive_rate=1e-6)
    keys = np.array([1, 2, 1, 3], dtype=np.uint64)
    assert bloom.add_and_check(keys).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="uint64"):
        bloom.contains(np.array([1, 2], dtype=np.int64))


def test_save_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bloom = BloomFilter(expected_items=1000, false_positive_rate=1e-3)
    bloom.add_and_check(_items("in", 500))
    path = tmp_path / "urls.bloom"
    bloom.save(path)
    loaded = BloomFilter.load(path)
    assert loaded.stats() == bloom.stats()
    assert loaded.contains(_items("in", 500)).all()
    assert loaded.add_and_check(_items("in", 3)).tolist() == [True, True, True]
    probe = _items("out", 5000)
    assert (loaded.contains(probe) == bloom.contains(probe)).all()


def test_load_rejects_a_truncated_or_foreign_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f.bloom"
    BloomFilter(expected_items=1000, false_positive_rate=1e-3).save(path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        BloomFilter.load(path)
    path.write_bytes(b"not a filter")
    with pytest.raises(ValueError, match="not a Bloom filter"):
        BloomFilter.load(path)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"expected_items": 0}, "expected_items"),
        ({"expected_items": 10, "false_positive_rate": 1.0}, "false_positive_rate"),
    ],
)
def test_invalid_sizes_name_the_field(kwargs, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=field):
        BloomFilter(**kwargs)
