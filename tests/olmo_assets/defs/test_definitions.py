"""Every definition of the code location loads, with the asset graph the declaration gives."""

from __future__ import annotations

import importlib
import sys

import pytest
import yaml
from dagster import (
    AllPartitionMapping,
    AssetKey,
    Definitions,
    DynamicPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
)

from olmo_assets.defs.assets import TRAINING_POOL, TRAINING_TAG
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import StageRun, code_version, stage_named

from .conftest import TASKS

RAW = {"raw_source/code", "raw_source/prose"}
CURATED = {*RAW, "attributes/code", "attributes/prose", "deduplicated"}
DEPS = {
    "raw_source/code": set(),
    "raw_source/prose": set(),
    "eval_task_data": set(),
    "attributes/code": {"raw_source/code"},
    "attributes/prose": {"raw_source/prose"},
    "deduplicated": {*RAW, "eval_task_data"},
    "curated_corpus": CURATED,
    "validation_splits": CURATED,
    "tokenizer": set(),
    "token_shards/code": {"tokenizer", "curated_corpus", "validation_splits"},
    "token_shards/prose": {"tokenizer", "curated_corpus", "validation_splits"},
    "corpus_report": {"curated_corpus"},
    "training_run": {"token_shards/code", "token_shards/prose"},
    "data_order": {"token_shards/code", "token_shards/prose"},
    "checkpoint": {"training_run", "token_shards/code", "token_shards/prose", "tokenizer"},
    "downstream_eval": {"checkpoint"},
    "perplexity_eval": {"checkpoint", "validation_splits"},
    "model_report": {"training_run", "downstream_eval", "perplexity_eval"},
}
CHECKS = {
    ("raw_source/code", "accounting"),
    ("raw_source/prose", "accounting"),
    ("attributes/code", "accounting"),
    ("attributes/prose", "accounting"),
    ("deduplicated", "accounting"),
    ("curated_corpus", "accounting"),
    ("curated_corpus", "no_contamination_left"),
    ("token_shards/code", "shards_readable"),
    ("token_shards/prose", "shards_readable"),
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


def test_every_definition_loads_with_the_declared_graph(defs: Definitions) -> None:
    Definitions.validate_loadable(defs)
    graph = defs.get_repository_def().asset_graph
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(DEPS)
    for key, parents in DEPS.items():
        node = graph.get(AssetKey.from_user_string(key))
        assert {p.to_user_string() for p in node.parent_keys} == parents, key
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == CHECKS


def test_partitions_follow_params(defs: Definitions) -> None:
    assets = defs.get_repository_def().assets_defs_by_key

    def keys(name: str) -> list[str]:
        partitions = assets[AssetKey(name)].partitions_def
        assert partitions is not None
        return list(partitions.get_partition_keys())

    assert keys("checkpoint") == keys("perplexity_eval") == ["2", "4"]
    assert sorted(keys("downstream_eval")) == sorted(f"{c}|{t}" for c in "24" for t in TASKS)
    for unpartitioned in ("deduplicated", "curated_corpus", "model_report"):
        assert assets[AssetKey.from_user_string(unpartitioned)].partitions_def is None
    # A source's shards are dynamic partitions, registered from the shard plan.
    for source in ("code", "prose"):
        for name in (f"raw_source/{source}", f"attributes/{source}", f"token_shards/{source}"):
            partitions = assets[AssetKey.from_user_string(name)].partitions_def
            assert isinstance(partitions, DynamicPartitionsDefinition)
            assert partitions.name == f"shards_{source}"
    # What reads every shard (the training run, a checkpoint) reads all of them, whatever
    # its own partitions.
    for name in ("training_run", "checkpoint"):
        mapping = assets[AssetKey(name)].get_partition_mapping(AssetKey(["token_shards", "code"]))
        assert isinstance(mapping, AllPartitionMapping), name
    mapping = assets[AssetKey("downstream_eval")].get_partition_mapping(AssetKey("checkpoint"))
    assert isinstance(mapping, MultiToSingleDimensionPartitionMapping)
    assert mapping.partition_dimension_name == "checkpoint"


def test_code_versions_are_the_declarations(defs: Definitions, small_lab: Lab) -> None:
    graph = defs.get_repository_def().asset_graph
    version = {
        key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()
    }
    tag = stage_named("tag")
    assert version["attributes/code"] == code_version(small_lab, StageRun(tag, ("code", "*")))
    assert version["attributes/prose"] == code_version(small_lab, StageRun(tag, ("prose", "*")))
    # Each source's own parameters enter its code version.
    assert version["attributes/code"] != version["attributes/prose"]
    assert version["curated_corpus"] == version["validation_splits"]
    assert all(version.values())


def test_training_limits_and_jobs(defs: Definitions) -> None:
    repository = defs.get_repository_def()
    training = repository.assets_defs_by_key[AssetKey("training_run")]
    assert training.keys == {AssetKey("training_run"), AssetKey("data_order")}
    assert training.op.tags[TRAINING_TAG] == "1"
    assert training.op.pool == TRAINING_POOL
    jobs = {job.name: job for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert set(jobs) == {
        "curation",
        "curation_shards_code",
        "curation_shards_prose",
        "tokenization",
        "tokenization_shards_code",
        "tokenization_shards_prose",
        "training",
        "training_checkpoint",
        "evaluation_downstream",
        "evaluation_perplexity",
        "evaluation",
    }
    assert jobs["training"].tags[TRAINING_TAG] == "1"
    assert jobs["curation"].executor_def.name == "multiprocess"

    def selected(name: str) -> set[str]:
        return {k.to_user_string() for k in jobs[name].asset_layer.selected_asset_keys}

    assert selected("curation_shards_code") == {"raw_source/code", "attributes/code"}
    # A shard's tokens come after the mix: a job of their own.
    assert selected("tokenization_shards_code") == {"token_shards/code"}
    assert selected("tokenization") == {"tokenizer"}
    assert selected("curation") == {
        "eval_task_data",
        "deduplicated",
        "curated_corpus",
        "validation_splits",
        "corpus_report",
    }
    assert selected("training") == {"training_run", "data_order"}
    assert selected("training_checkpoint") == {"checkpoint"}
    assert selected("evaluation_downstream") == {"downstream_eval"}
    assert selected("evaluation_perplexity") == {"perplexity_eval"}
    assert selected("evaluation") == {"model_report"}


def test_a_formatted_and_a_generative_task_are_partitions(small_lab: Lab) -> None:
    """``arc_easy-mc`` (``arc_easy:mc``'s key) and ``nq_open`` are downstream partitions."""
    path = small_lab.repo / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["eval"]["tasks"] = ["arc_easy-mc", "nq_open"]
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    sys.modules.pop("olmo_assets.definitions", None)
    defs = importlib.import_module("olmo_assets.definitions").defs
    Definitions.validate_loadable(defs)
    partitions = defs.get_repository_def().assets_defs_by_key[AssetKey("downstream_eval")]
    assert partitions.partitions_def is not None
    assert sorted(partitions.partitions_def.get_partition_keys()) == [
        "2|arc_easy-mc", "2|nq_open", "4|arc_easy-mc", "4|nq_open",
    ]  # fmt: skip
