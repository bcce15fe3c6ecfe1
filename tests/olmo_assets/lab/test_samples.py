"""Example documents on the asset pages: a checkpoint's sources and last batches, a raw
source's first documents, the mix's removed examples; the helpers that cut them to cells."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from olmo_assets.lab.params import Lab
from olmo_assets.lab.query import run_query
from olmo_assets.lab.samples import MAX_ROWS, spread, text_start
from olmo_assets.lab.steps.checkpoints import record_checkpoint
from olmo_assets.lab.steps.curation import _curation_config, build_source, mix
from olmo_assets.lab.steps.results import StepResult
from olmo_nn.data import read_documents
from olmo_nn.train.batch import reconstruct_batch

from .conftest import GLOBAL_BATCH_SIZE


def test_text_start_flattens_whitespace_and_cuts_long_text() -> None:
    assert text_start("def f():\n    return 1\n") == "def f(): return 1"
    assert text_start("abcdef", limit=4) == "abc…"
    assert text_start("abcd", limit=4) == "abcd"
    assert text_start("") == ""


def test_spread_takes_every_group_in_turn() -> None:
    groups = {"a": [1, 2, 3, 4], "b": [5], "c": [6, 7]}
    assert spread(groups, per_group=3) == [1, 2, 3, 5, 6, 7]
    assert spread(groups, per_group=3, limit=4) == [1, 2, 5, 6]
    assert spread(groups, per_group=1) == [1, 5, 6]


@pytest.fixture(scope="module")
def checkpoint(built_lab: Lab) -> StepResult:
    """The checkpoint step at step 4, run again (its record is rewritten byte for byte)."""
    record = built_lab.checkpoint_record(4) / "checkpoint.json"
    before = record.read_bytes()
    result = record_checkpoint(built_lab, 4)
    assert record.read_bytes() == before
    return result


def test_checkpoint_reports_its_weights(built_lab: Lab, checkpoint: StepResult) -> None:
    folder = built_lab.checkpoint(4)
    record = json.loads((built_lab.checkpoint_record(4) / "checkpoint.json").read_text())
    assert record["checkpoint_path"] == "lab/runs/train/checkpoints/step000004-unsharded"
    assert record["weights_bytes"] == (folder / "model.safetensors").stat().st_size
    assert record["folder_bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    assert record["tokens_seen"] == 4 * GLOBAL_BATCH_SIZE * 256
    assert checkpoint.metadata == record | {"batch_fingerprints_match": True}


def test_checkpoint_tokens_by_source_follow_the_batches(
    built_lab: Lab, checkpoint: StepResult
) -> None:
    """Counted again from ``olmo batch``'s reconstruction of steps 1-4, and equal to what the
    lab's database says for the checkpoint."""
    tokens: Counter[str] = Counter()
    for step in range(1, 5):
        for instance in reconstruct_batch(built_lab.run_dir, step).instances:
            for doc in instance.documents:
                tokens[doc.source] += doc.end - doc.start
    total = sum(tokens.values())
    assert total == checkpoint.metadata["tokens_seen"]
    assert checkpoint.tables["tokens_by_source"] == [
        {"source": s, "tokens": n, "share": round(n / total, 4)} for s, n in sorted(tokens.items())
    ]
    rows = run_query(
        built_lab,
        "SELECT source, tokens FROM source_share_by_checkpoint WHERE step = 4 ORDER BY source",
    ).rows
    assert rows == sorted(tokens.items())


def test_checkpoint_shows_the_documents_of_its_last_batches(
    built_lab: Lab, checkpoint: StepResult
) -> None:
    expected = [
        {
            "step": step,
            "row": instance.position,
            "instance": instance.instance,
            "source": doc.source,
            "document": doc.id,
            "offset": doc.offset,
            "tokens": doc.end - doc.start,
        }
        for step in (4, 3, 2, 1)
        for instance in reconstruct_batch(built_lab.run_dir, step).instances
        for doc in instance.documents
    ][:MAX_ROWS]
    rows = checkpoint.tables["sample_documents"]
    assert [{k: v for k, v in row.items() if k != "text_start"} for row in rows] == expected
    # The text start is decoded from the shards: the curated document's own start.
    texts = {doc.id: doc.text for doc in read_documents([built_lab.curated / "documents"])}
    assert [row["text_start"] for row in rows] == [
        text_start(texts[row["document"]]) for row in rows
    ]


def test_raw_source_shows_its_first_documents(built_lab: Lab, tmp_path: Path) -> None:
    from pydoc_data.topics import topics

    shutil.copy(built_lab.repo / "params.yaml", tmp_path / "params.yaml")
    lab = Lab(tmp_path, built_lab.params, built_lab.values)
    result = build_source(lab, "prose", "00000")
    first = sorted(topics)[:5]
    assert result.tables["sample_documents"] == [
        {
            "id": f"pydoc/{name}",
            "characters": len(topics[name]),
            "topic": name,
            "text_start": text_start(topics[name]),
        }
        for name in first
    ]
    assert first[0] == "assert"


def test_every_source_holds_out_validation_documents_in_the_mix(built_lab: Lab) -> None:
    mixing = _curation_config(built_lab, ["code", "prose"], mixing=True)
    assert {s.name: s.validation_fraction for s in mixing.sources} == {"code": 0.05, "prose": 0.05}
    tagging = _curation_config(built_lab, ["code", "prose"], mixing=False)
    assert {s.validation_fraction for s in tagging.sources} == {0.0}


def test_mix_shows_removed_examples_of_every_filter(built_lab: Lab, tmp_path: Path) -> None:
    for folder in ("configs", "lab/raw", "lab/tagged", "lab/dedup"):
        shutil.copytree(built_lab.repo / folder, tmp_path / folder)
    shutil.copy(built_lab.repo / "params.yaml", tmp_path / "params.yaml")
    lab = Lab(tmp_path, built_lab.params, built_lab.values)
    result = mix(lab)
    removed = {
        row["id"]: row
        for path in sorted(lab.curated.glob("removed/*/*.parquet"))
        for row in pq.read_table(path).to_pylist()
    }
    rows = result.tables["removed_examples"]
    assert 0 < len(rows) <= MAX_ROWS
    for row in rows:
        assert {k: removed[row["id"]][k] for k in ("source", "stage", "reason")} == {
            k: row[k] for k in ("source", "stage", "reason")
        }
    # Each filter that removed anything has an example (there are fewer than 20 filters here).
    assert {(r["stage"], r["reason"]) for r in rows} == {
        (r["stage"], r["reason"]) for r in removed.values()
    }
    assert max(Counter((r["stage"], r["reason"]) for r in rows).values()) <= 3
    assert result.metadata["sources_without_validation"] == "code"
