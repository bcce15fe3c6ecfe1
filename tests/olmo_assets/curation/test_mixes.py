"""Named mixes' sources: a code source holds out a validation split like any other source."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from olmo_assets.curation.config import CurationConfig, DedupConfig
from olmo_assets.curation.mixer import validation_mask
from olmo_assets.curation.mixes import code_source
from olmo_assets.curation.pipeline import curate


def _ids(folder: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            ids += [json.loads(line)["id"] for line in lines]
    return ids


def test_a_code_source_holds_out_its_validation_fraction(tmp_path: Path) -> None:
    ids = [f"repo/module_{i}.py" for i in range(40)]
    records = [
        {"id": doc_id, "text": f"def f_{i}(x):\n    return x + {i}\n", "metadata": {"path": doc_id}}
        for i, doc_id in enumerate(ids)
    ]
    raw = tmp_path / "raw" / "code.jsonl"
    raw.parent.mkdir()
    raw.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    source = code_source("code", [str(raw.parent)], validation_fraction=0.25)
    config = CurationConfig(
        sources=[source],
        taggers=["length"],
        dedup=DedupConfig(url=False, exact=True, paragraphs=False),
        workers=1,
    )
    curate(config, tmp_path / "out")
    mask = validation_mask(ids, source="code", fraction=0.25, seed=config.seed)
    held_out = [doc_id for doc_id, chosen in zip(ids, mask, strict=True) if chosen]
    assert len(held_out) == 11
    assert _ids(tmp_path / "out" / "validation" / "code") == held_out
    assert _ids(tmp_path / "out" / "documents" / "code") == [i for i in ids if i not in held_out]


def test_a_code_source_holds_out_nothing_by_default() -> None:
    assert code_source("code", ["x"]).validation_fraction == 0.0
