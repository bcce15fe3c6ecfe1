"""OLMo-core reads our token shards unmodified: same instances, same document boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from olmo_assets.curation.local_sources import prose_documents
from olmo_nn.data import InstanceDataset, TokenShards, tokenize_documents

olmo_core_data = pytest.importorskip("olmo_core.data")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gzip
    import json

    raw = tmp_path_factory.mktemp("raw") / "prose" / "docs.jsonl.gz"
    raw.parent.mkdir(parents=True)
    with gzip.open(raw, "wt", encoding="utf-8") as out:
        for doc in prose_documents():
            out.write(json.dumps(doc) + "\n")
    output = tmp_path_factory.mktemp("shards")
    # Small files so the set spans several token files, each with a dropped remainder.
    tokenize_documents([raw.parent], output, workers=1, max_tokens_per_file=40_000, overwrite=True)
    return output


def test_olmo_core_fixed_length_dataset_reads_our_shards(shards: Path, tmp_path: Path) -> None:
    ours = InstanceDataset(shards, sequence_length=128)
    manifest = TokenShards(shards)
    assert len(manifest.files) >= 3
    dataset = olmo_core_data.NumpyFSLDataset(
        *[shards / name for name in manifest.files],
        sequence_length=128,
        pad_token_id=1,
        eos_token_id=50279,
        vocab_size=50280,
        dtype=np.uint16,
        generate_doc_lengths=True,
    )
    dataset.work_dir = tmp_path
    assert len(dataset) == len(ours)
    for i in range(0, len(ours), 7):
        item = dataset[i]
        np.testing.assert_array_equal(item["input_ids"].numpy(), ours[i])
        # OLMo-core splits instances into documents at EOS; our index says the same.
        lengths = [span.end - span.start for span in ours.documents_in_instance(i)]
        assert item["doc_lens"].tolist() == lengths
        assert sum(lengths) == 128
