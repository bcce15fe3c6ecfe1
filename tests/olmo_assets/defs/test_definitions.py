"""Every definition of the code location loads, with the expected asset graph."""

from __future__ import annotations

import importlib
import sys

import pytest
from dagster import (
    AssetKey,
    Definitions,
    IdentityPartitionMapping,
    MultiToSingleDimensionPartitionMapping,
)

from olmo_assets.defs.assets import TRAINING_POOL, TRAINING_TAG
from olmo_assets.defs.catalog import code_version
from olmo_assets.lab.params import Lab

from .conftest import SOURCES, TASKS

DEPS = {
    "raw_source": set(),
    "eval_task_data": set(),
    "attributes": {"raw_source"},
    "deduplicated": {"raw_source", "eval_task_data"},
    "curated_corpus": {"raw_source", "attributes", "deduplicated"},
    "validation_splits": {"raw_source", "attributes", "deduplicated"},
    "tokenizer": set(),
    "token_shards": {"tokenizer", "curated_corpus", "validation_splits"},
    "corpus_report": {"curated_corpus"},
    "training_run": {"token_shards"},
    "data_order": {"token_shards"},
    "checkpoint": {"training_run"},
    "downstream_eval": {"checkpoint"},
    "perplexity_eval": {"checkpoint", "validation_splits"},
    "model_report": {"training_run", "downstream_eval", "perplexity_eval"},
}
CHECKS = {
    ("attributes", "accounting"),
    ("curated_corpus", "accounting"),
    ("curated_corpus", "no_contamination_left"),
    ("token_shards", "shards_readable"),
    ("training_run", "losses_finite"),
    ("downstream_eval", "rows_complete"),
    ("perplexity_eval", "rows_complete"),
    ("model_report", "rows_complete"),
}


@pytest.fixture
def defs(small_lab: Lab) -> Definitions:
    """The code location module itself, imported for the small lab (``OLMO_LAB_REPO``)."""
    sys.modules.pop("olmo_assets.definitions", None)
    module = importlib.import_module("olmo_assets.definitions")
    return module.defs


def test_every_definition_loads(defs: Definitions, small_lab: Lab) -> None:
    Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(DEPS)
    for key, parents in DEPS.items():
        node = graph.get(AssetKey(key))
        assert {p.to_user_string() for p in node.parent_keys} == parents, key
        assert node.code_version is not None
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == CHECKS
    assert {job.name for job in repository.get_all_jobs()} >= {
        "curation",
        "training",
        "evaluation",
        "perplexity",
    }


def test_partitions_follow_params(defs: Definitions, small_lab: Lab) -> None:
    assets = defs.get_repository_def().assets_defs_by_key

    def keys(name: str) -> list[str]:
        partitions = assets[AssetKey(name)].partitions_def
        assert partitions is not None
        return list(partitions.get_partition_keys())

    assert keys("raw_source") == keys("attributes") == list(SOURCES)
    assert keys("checkpoint") == keys("perplexity_eval") == ["2", "4"]
    assert sorted(keys("downstream_eval")) == sorted(f"{c}|{t}" for c in "24" for t in TASKS)
    assert assets[AssetKey("deduplicated")].partitions_def is None

    attributes = assets[AssetKey("attributes")]
    assert isinstance(
        attributes.get_partition_mapping(AssetKey("raw_source")), IdentityPartitionMapping
    )
    downstream = assets[AssetKey("downstream_eval")]
    mapping = downstream.get_partition_mapping(AssetKey("checkpoint"))
    assert isinstance(mapping, MultiToSingleDimensionPartitionMapping)
    assert mapping.partition_dimension_name == "checkpoint"


def test_code_versions_training_limits_and_jobs(defs: Definitions, small_lab: Lab) -> None:
    repository = defs.get_repository_def()
    assets = repository.assets_defs_by_key
    steps = {"attributes": "tag", "curated_corpus": "mix", "training_run": "train"}
    for key, step in steps.items():
        assert assets[AssetKey(key)].code_versions_by_key[AssetKey(key)] == code_version(
            small_lab, step
        )
    training = assets[AssetKey("training_run")]
    assert training.keys == {AssetKey("training_run"), AssetKey("data_order")}
    assert training.op.tags[TRAINING_TAG] == "1"
    assert training.op.pool == TRAINING_POOL
    assert repository.get_job("training").tags[TRAINING_TAG] == "1"
    assert repository.get_job("curation").executor_def.name == "multiprocess"
    curation = {
        k.to_user_string() for k in repository.get_job("curation").asset_layer.selected_asset_keys
    }
    assert curation == {
        "raw_source",
        "eval_task_data",
        "attributes",
        "deduplicated",
        "curated_corpus",
        "validation_splits",
        "tokenizer",
        "token_shards",
        "corpus_report",
    }
