"""The artifact table: partitions map to step arguments, code versions follow the params."""

from __future__ import annotations

import pytest
import yaml

from olmo_assets.defs.assets import CHECK_DESCRIPTIONS
from olmo_assets.defs.catalog import (
    ARTIFACTS,
    artifact,
    artifacts_of,
    code_version,
    partition_key,
    step_arguments,
)
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps import STEPS


def test_every_step_writes_an_artifact_and_every_check_is_described() -> None:
    written = {item.step for item in ARTIFACTS}
    assert set(STEPS) <= written
    for item in ARTIFACTS:
        assert set(item.checks) <= set(CHECK_DESCRIPTIONS)
        for dep in item.deps:
            assert artifact(dep).key == dep
    # The step's primary artifact (the one carrying its metadata) comes first.
    assert [a.key for a in artifacts_of("mix")] == ["curated_corpus", "validation_splits"]
    assert [a.key for a in artifacts_of("train")] == ["training_run", "data_order"]
    with pytest.raises(KeyError, match="no asset is written by step 'nope'"):
        artifacts_of("nope")


def test_partition_keys_round_trip_to_step_arguments() -> None:
    downstream, attributes = artifact("downstream_eval"), artifact("attributes")
    assert partition_key(downstream, ("80", "arc_easy")) == "80|arc_easy"
    assert step_arguments(downstream, "80|arc_easy") == ("80", "arc_easy")
    assert partition_key(attributes, ("code",)) == "code"
    assert step_arguments(attributes, "code") == ("code",)
    assert partition_key(artifact("tokenizer"), ()) is None
    with pytest.raises(ValueError, match="partitioned"):
        step_arguments(attributes, None)


def _edit_params(lab: Lab, **changes: object) -> Lab:
    path = lab.repo / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return Lab.load(lab.repo)


def test_code_versions_change_with_exactly_the_params_a_step_reads(small_lab: Lab) -> None:
    steps = sorted(STEPS)
    before = {step: code_version(small_lab, step) for step in steps}
    assert before == {step: code_version(Lab.load(small_lab.repo), step) for step in steps}

    after = _edit_params(small_lab, train__max_steps=6)
    changed = {s for s in steps if code_version(after, s) != before[s]}
    assert changed == {"train", "checkpoint"}

    # The mix config's contents count for the curation steps that apply it.
    before = {step: code_version(after, step) for step in steps}
    mix = small_lab.repo / after.params.curation.mix
    mix.write_text(mix.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    changed = {s for s in steps if code_version(after, s) != before[s]}
    assert {"tag", "dedup", "mix"} <= changed
    assert "tokenize" not in changed and "source" not in changed
