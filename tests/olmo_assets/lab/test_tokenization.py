"""Per-shard tokenization's edges, on files written by hand: a shard the mix kept nothing of,
a shard not tokenized yet, a mix that wrote no manifest, nothing to train on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.results import InputError
from olmo_assets.lab.steps.tokenization import (
    save_tokenizer,
    shards_readable,
    split_folders,
    tokenize,
)
from olmo_assets.lab.steps.training import trainer_arguments

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sources"] = {"code": {"kind": "code"}, "prose": {"kind": "prose"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return Lab.load(tmp_path)


def _empty_manifest(lab: Lab, source: str) -> None:
    path = lab.curated_shard(source, "00000")
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {"train": [], "validation": []}
    path.write_text(json.dumps({"source": source, "shard": "00000", "files": files}))


def test_a_shard_the_mix_kept_nothing_of_has_a_summary_and_no_splits(lab: Lab) -> None:
    save_tokenizer(lab)
    _empty_manifest(lab, "code")
    result = tokenize(lab, "code", "00000")
    assert result.metadata == {"tokens": 0, "documents": 0, "validation_tokens": 0, "rejected": 0}
    folder = lab.token_shards("code", "00000")
    assert sorted(p.name for p in folder.iterdir()) == ["summary.json"]
    assert json.loads((folder / "summary.json").read_text()) == {
        "source": "code",
        "shard": "00000",
        "splits": {},
    }
    check = shards_readable(lab, "code", "00000")
    assert (check.passed, check.metadata) == (True, {"splits": "none", "problems": "none"})


def test_a_shard_not_tokenized_yet_is_named_with_how_to_make_it(lab: Lab) -> None:
    save_tokenizer(lab)
    _empty_manifest(lab, "code")
    tokenize(lab, "code", "00000")
    message = (
        f"{lab.token_shards('prose', '00000')} holds no token shards: materialize "
        "token_shards/prose partition 00000 first (or `dvc repro tokenize@prose-00000`)"
    )
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        split_folders(lab, "train")


def test_nothing_to_train_on_when_every_shard_is_empty(lab: Lab) -> None:
    save_tokenizer(lab)
    for source in ("code", "prose"):
        _empty_manifest(lab, source)
        tokenize(lab, source, "00000")
    assert split_folders(lab, "train") == []
    with pytest.raises(InputError, match="holds kept documents: nothing to train on"):
        trainer_arguments(lab)


def test_a_shard_without_a_manifest_asks_for_the_mix(lab: Lab) -> None:
    save_tokenizer(lab)
    with pytest.raises(
        FileNotFoundError, match="the mix wrote no manifest of shard 00000 of 'code'"
    ):
        tokenize(lab, "code", "00000")
    assert not lab.token_shards("code", "00000").exists()
