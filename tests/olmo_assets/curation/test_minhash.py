"""Fuzzy deduplication: near-duplicates cluster, unrelated documents do not, ids are the first's."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from olmo_assets.curation.minhash import (
    NO_SIGNATURE,
    PRIME,
    MinHashConfig,
    MinHashDeduplicator,
    MinHasher,
    cluster_signatures,
)


def _text(seed: int, num_words: int = 200) -> str:
    rng = np.random.default_rng(seed)
    vocabulary = [f"word{i}" for i in range(5000)]
    return " ".join(rng.choice(vocabulary, num_words))


BASE = _text(1)
NEAR = BASE.replace(BASE.split()[50], "CHANGED", 1).replace(BASE.split()[150], "edited", 1)
DOCS = pl.DataFrame(
    {
        "id": ["other-a", "base", "other-b", "near", "copy", "empty", "short", "short-copy"],
        "text": [_text(2), BASE, _text(3), NEAR, BASE.upper(), " \n", "Two words", "two WORDS"],
        "source": ["web"] * 8,
    }
)
EXPECTED_CLUSTER = ["other-a", "base", "other-b", "base", "base", "empty", "short", "short"]
EXPECTED_DUPLICATE = [False, False, False, True, True, False, False, True]


def _cluster(batches: list[pl.DataFrame], **kwargs) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    deduplicator = MinHashDeduplicator(**kwargs)
    for batch in batches:
        deduplicator.add(batch)
    return deduplicator.clusters()


def test_near_duplicates_cluster_under_the_first_document() -> None:
    out = _cluster([DOCS])
    assert out.columns == ["id", "minhash__cluster_id", "minhash__is_duplicate"]
    assert out["id"].to_list() == DOCS["id"].to_list()
    assert out["minhash__cluster_id"].to_list() == EXPECTED_CLUSTER
    assert out["minhash__is_duplicate"].to_list() == EXPECTED_DUPLICATE


def test_batches_and_spilling_to_disk_give_the_same_clusters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    batches = [DOCS.slice(0, 3), DOCS.slice(3, 4), DOCS.slice(7, 1)]
    assert _cluster(batches).equals(_cluster([DOCS]))
    spilled = _cluster(batches, spill_path=tmp_path / "signatures.u32")
    assert spilled.equals(_cluster([DOCS]))
    assert (tmp_path / "signatures.u32").stat().st_size == DOCS.height * 112 * 4


def test_order_decides_which_copy_is_first() -> None:
    out = _cluster([DOCS.reverse()])
    cluster = dict(zip(out["id"], out["minhash__cluster_id"], strict=True))
    assert cluster["base"] == cluster["near"] == "copy"
    assert cluster["short"] == "short-copy"


def test_signatures_are_compact_and_deterministic() -> None:
    texts = DOCS["text"].to_list()
    signatures = MinHasher().signatures(texts)
    assert signatures.shape == (len(texts), 112) and signatures.dtype == np.uint32
    assert (signatures[5] == NO_SIGNATURE).all()  # no words, no signature
    assert (signatures[[0, 1, 2, 3, 4, 6, 7]] < PRIME).all()
    assert np.array_equal(signatures, MinHasher().signatures(texts))
    assert np.array_equal(signatures[1], signatures[4])  # shingles ignore case
    assert not np.array_equal(signatures, MinHasher(MinHashConfig(seed=1)).signatures(texts))
    # Estimated Jaccard similarity: near-duplicates agree on most values, strangers on none.
    assert (signatures[1] == signatures[3]).mean() > 0.8
    assert (signatures[0] == signatures[1]).mean() < 0.05


def test_banding_joins_transitively_on_an_exact_band_match() -> None:
    config = MinHashConfig(num_bands=3, rows_per_band=2)
    signatures = np.arange(5 * 6, dtype=np.uint32).reshape(5, 6)
    signatures[2, 0:2] = signatures[0, 0:2]  # rows 0 and 2 share band 0
    signatures[3, 4:6] = signatures[2, 4:6]  # rows 2 and 3 share band 2
    signatures[4, 2:3] = signatures[1, 2:3]  # half a band is not a match
    signatures[1] = NO_SIGNATURE
    assert cluster_signatures(signatures, config).tolist() == [0, 1, 0, 0, 4]
    with pytest.raises(ValueError, match="3 bands of 2 rows"):
        cluster_signatures(signatures[:, :4], config)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="rows_per_band"):
        MinHashConfig(rows_per_band=0)
    assert MinHashConfig().num_perm == 112


def test_no_documents_no_clusters() -> None:
    out = MinHashDeduplicator().clusters()
    assert out.height == 0 and out.columns == ["id", "minhash__cluster_id", "minhash__is_duplicate"]


@pytest.mark.parametrize("spill", [False, True])
def test_saved_signatures_come_before_a_later_run(tmp_path, spill: bool) -> None:  # type: ignore[no-untyped-def]
    first = MinHashDeduplicator(spill_path=tmp_path / "a.u32" if spill else None)
    first.add(DOCS.slice(0, 3))  # other-a, base, other-b
    first.save(tmp_path / "state")
    later = MinHashDeduplicator.load(
        tmp_path / "state", spill_path=tmp_path / "b.u32" if spill else None
    )
    assert later.num_prior == 3
    later.add(DOCS.slice(3, 2))  # near, copy: both in base's cluster, begun in the first run
    out = later.clusters()
    assert out["id"].to_list() == ["near", "copy"]
    assert out["minhash__is_duplicate"].to_list() == [True, True]
    assert out["minhash__cluster_id"].to_list() == [None, None]  # an earlier run's document
    assert later.stats()["num_docs"] == 5
    later.save(tmp_path / "state")
    assert MinHashDeduplicator.load(tmp_path / "state").num_prior == 5
    (tmp_path / "state" / "signatures.u32").write_bytes(b"\0" * 12)
    with pytest.raises(ValueError, match="the state is damaged"):
        MinHashDeduplicator.load(tmp_path / "state")
