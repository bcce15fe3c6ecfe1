"""The pipeline's declaration: dvc.yaml is generated from it and current, each stage's code
version moves with exactly the keys, files and code the stage declares, runs know what they
read, and names that become paths are checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from olmo_assets.lab.dvcyaml import dvc_yaml
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import (
    STAGES,
    StageRun,
    code_version,
    inputs,
    parse_run,
    stage_named,
    stage_runs,
    upstream_runs,
)
from olmo_assets.lab.steps.results import InputError
from olmo_assets.lab.steps.training import launch_identity
from olmo_nn.config import ConfigError

from .conftest import REPO, small_params


def test_the_committed_dvc_yaml_is_the_generated_one() -> None:
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == dvc_yaml()


def test_dvc_yaml_check_names_the_fix(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(dvc_yaml().replace("eval.limit", "eval.limits"))
    olmo = [sys.executable, "-m", "olmo_nn.cli.main", "lab", "dvc-yaml", "--repo", str(tmp_path)]
    stale = subprocess.run([*olmo, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1
    assert stale.stderr == (
        f"{tmp_path / 'dvc.yaml'} differs from what olmo_assets/lab/pipeline.py and the shard "
        "plan declare: run `olmo lab dvc-yaml` and commit it\n"
        f"{tmp_path / 'sources' / 'dvc.yaml'} differs from what olmo_assets/lab/pipeline.py and "
        "the shard plan declare: run `olmo lab shards` and commit it\n"
    )
    assert subprocess.run(olmo, capture_output=True).returncode == 0
    shards = [sys.executable, "-m", "olmo_nn.cli.main", "lab", "shards", "--repo", str(tmp_path)]
    assert subprocess.run(shards, capture_output=True).returncode == 0
    assert subprocess.run([*olmo, "--check"], capture_output=True).returncode == 0


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(small_params()), encoding="utf-8")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    return Lab.load(tmp_path)


def _versions(lab: Lab) -> dict[str, str]:
    loaded = Lab.load(lab.repo)
    return {
        run.dvc_name: code_version(loaded, run)
        for stage in STAGES
        for run in stage_runs(loaded, stage)
    }


def _edit(lab: Lab, key: str, value: object) -> None:
    params = yaml.safe_load((lab.repo / "params.yaml").read_text(encoding="utf-8"))
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    (lab.repo / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


@pytest.mark.parametrize(
    ("key", "value", "changed"),
    [
        ("eval.limit", 9, {"downstream@2-arc_easy", "downstream@2-winogrande",
                           "downstream@4-arc_easy", "downstream@4-winogrande"}),
        ("eval.perplexity_documents", 7, {"perplexity@2", "perplexity@4"}),
        ("sources.code.max_mb", 0.2, {"sources/dvc.yaml:source-code-00000", "tag@code-00000",
                                      "dedup", "mix"}),
        ("train.max_steps", 6, {"train"}),
        ("curation.validation_fraction", 0.1, {"mix"}),
        ("tokenizer", "configs/nope.json", {"tokenizer"}),
        ("workers", 1, set()),
    ],
)  # fmt: skip
def test_a_parameter_changes_the_code_version_of_exactly_its_readers(
    lab: Lab, key: str, value: object, changed: set[str]
) -> None:
    before = _versions(lab)
    _edit(lab, key, value)
    after = _versions(lab)
    assert {name for name in before if after.get(name) != before[name]} == changed


def test_a_config_file_changes_exactly_the_stages_that_read_it(lab: Lab) -> None:
    before = _versions(lab)
    mix = lab.repo / lab.params.curation.mix
    mix.write_text(mix.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert {n for n, v in _versions(lab).items() if v != before[n]} == {
        "tag@code-00000",
        "tag@prose-00000",
        "dedup",
        "mix",
    }
    before = _versions(lab)
    config = lab.repo / lab.params.train.config
    config.write_text(config.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    assert {n for n, v in _versions(lab).items() if v != before[n]} == {"train"}


def test_every_stage_depends_on_its_own_step_module() -> None:
    modules = {stage.name: stage.module for stage in STAGES}
    assert modules["tag"] == "olmo_assets/lab/steps/curation.py"
    assert modules["train"] == "olmo_assets/lab/steps/training.py"
    for stage in STAGES:
        assert (REPO / stage.module).is_file()
        assert all((REPO / path).exists() for path in stage.code_paths), stage.name


def test_runs_know_what_they_read(lab: Lab) -> None:
    def names(stage: str, *arguments: str) -> list[str]:
        run = StageRun(stage_named(stage), arguments)
        return [r.dvc_name for r in upstream_runs(lab, run)]

    assert names("tag", "prose", "00000") == ["sources/dvc.yaml:source-prose-00000"]
    assert names("downstream", "4", "arc_easy") == ["checkpoint@4"]
    assert names("perplexity", "2") == ["checkpoint@2", "mix"]
    assert names("mix") == [
        "sources/dvc.yaml:source-code-00000",
        "sources/dvc.yaml:source-prose-00000",
        "tag@code-00000",
        "tag@prose-00000",
        "dedup",
    ]
    assert names("model_report") == [
        "train",
        "downstream@2-arc_easy",
        "downstream@2-winogrande",
        "downstream@4-arc_easy",
        "downstream@4-winogrande",
        "perplexity@2",
        "perplexity@4",
    ]

    # What a materialization links to: the asset (and partition) of each artifact read.
    def read(stage: str, *arguments: str) -> list[tuple[str, str | None]]:
        run = StageRun(stage_named(stage), arguments)
        return [("/".join(r.asset_path(a)), r.partition) for r, a in inputs(lab, run)]

    assert read("downstream", "4", "arc_easy") == [("checkpoint", "4")]
    assert read("perplexity", "2") == [("checkpoint", "2"), ("validation_splits", None)]
    assert read("tag", "prose", "00000") == [("raw_source/prose", "00000")]
    assert read("model_report")[:3] == [
        ("training_run", None),
        ("downstream_eval", "2|arc_easy"),
        ("downstream_eval", "2|winogrande"),
    ]
    assert read("model_report")[-2:] == [("perplexity_eval", "2"), ("perplexity_eval", "4")]
    run = StageRun(stage_named("downstream"), ("4", "arc_easy"))
    assert (run.dvc_name, run.partition) == ("downstream@4-arc_easy", "4|arc_easy")
    assert run.command == ["python", "-m", "olmo_assets.defs.stage", "downstream", "4", "arc_easy"]


def test_bad_stage_arguments_are_refused_with_the_fix(lab: Lab) -> None:
    with pytest.raises(InputError) as wrong_count:
        parse_run(lab, "downstream", ["4"])
    assert str(wrong_count.value) == (
        "stage 'downstream' takes 2 argument(s) (step, task), got ['4']"
    )
    with pytest.raises(InputError) as unknown:
        parse_run(lab, "tag", ["web", "00000"])
    assert str(unknown.value) == "unknown source 'web'; params.yaml names code, prose"
    with pytest.raises(InputError) as no_shard:
        parse_run(lab, "tag", ["prose", "00001"])
    assert str(no_shard.value) == (
        "source 'prose' has no shard '00001' (shards: 00000); `olmo lab shards` plans new files "
        "into new shards"
    )
    with pytest.raises(InputError, match="checkpoint step 'last' is not a whole number"):
        parse_run(lab, "checkpoint", ["last"])


@pytest.mark.parametrize("name", ["../escaped", "..", "a/b", "web.crawl", "", "code\n"])
def test_a_source_name_must_be_one_safe_path_part(tmp_path: Path, name: str) -> None:
    params = small_params()
    params["sources"] = {name: {"kind": "prose"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        Lab.load(tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'params.yaml'}: sources: source name {name!r} is not allowed: use "
        "letters, digits, '_' and '-' (starting with a letter or digit), since it names a "
        "folder, a DVC stage and a Dagster asset"
    )


def test_eval_tasks_take_new_tasks_but_no_suite(tmp_path: Path) -> None:
    params = small_params()
    params["eval"]["tasks"] = ["commonsense_qa", "mmlu_anatomy"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert Lab.load(tmp_path).params.eval.tasks == ["commonsense_qa", "mmlu_anatomy"]
    params["eval"]["tasks"] = ["arc_easy", "olmo1"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        Lab.load(tmp_path)
    message = str(error.value)
    assert "eval.tasks has the suite 'olmo1'" in message
    assert "list its tasks instead: [arc_easy, arc_challenge," in message
    assert "mmlu_world_religions-mc]" in message


def test_eval_tasks_spell_a_format_as_a_partition_key(tmp_path: Path) -> None:
    params = small_params()
    keys = ["arc_easy-mc", "mmlu_anatomy-mc", "boolq-rc", "nq_open", "basic_arithmetic"]
    params["eval"]["tasks"] = keys
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    assert Lab.load(tmp_path).params.eval.tasks == keys
    for tasks, expected in (
        (["arc_easy:mc"], "eval.tasks has 'arc_easy:mc': a partition key cannot hold ':'; "
                          "write arc_easy-mc"),
        (["olmes-mc"], "eval.tasks has the suite 'olmes-mc'; each entry is one task (a "
                       "partition and a DVC stage), so list its tasks instead: "
                       "[arc_challenge-mc, arc_easy-mc,"),
        (["arc_easy-xx"], "eval.tasks has 'arc_easy-xx': Unknown task 'arc_easy-xx'"),
        (["nq_open-mc"], "eval.tasks has 'nq_open-mc': task 'nq_open' is generative"),
    ):  # fmt: skip
        params["eval"]["tasks"] = tasks
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        with pytest.raises(ConfigError) as error:
            Lab.load(tmp_path)
        assert expected in str(error.value)


def test_training_resumes_only_what_was_launched_the_same_way(lab: Lab) -> None:
    """An edited training config or trainer starts the run afresh instead of resuming."""
    for source in lab.params.sources:
        shard = lab.token_shards(source, "00000")
        (shard / "train").mkdir(parents=True)
        (shard / "train" / "manifest.json").write_text("{}", encoding="utf-8")
        (shard / "summary.json").write_text('{"splits": {"train": {}}}', encoding="utf-8")

    def identity() -> str:
        loaded = Lab.load(lab.repo)
        return launch_identity(loaded)

    before = identity()
    _edit(lab, "workers", 1)
    assert identity() == before
    # Other hardware resumes the run: nodes, processes, micro-batch, launcher.
    train = dict(lab.params.train.to_dict())
    for key, value in (
        ("nproc", 2),
        ("micro_batch_size", 2),
        ("launcher", "slurm"),
        ("slurm", {"nodes": 4, "gpus_per_node": 8}),
        ("overrides", {**train["overrides"], "activation_checkpointing": True}),
    ):
        _edit(lab, "train", {**train, key: value})
        assert identity() == before, key
    _edit(lab, "train", {**train, "max_steps": train["max_steps"] + 1})
    assert identity() != before
    _edit(lab, "train", {**train, "overrides": {**train["overrides"], "optim.lr": 1.0}})
    assert identity() != before
    _edit(lab, "train", train)
    assert identity() == before
    # The same rule for the training config's own file.
    config = lab.repo / lab.params.train.config
    text = config.read_text(encoding="utf-8")
    config.write_text(text + "activation_checkpointing: true\n", encoding="utf-8")
    assert identity() == before
    config.write_text(text, encoding="utf-8")
    config = lab.repo / lab.params.train.config
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("seed: 6198", "seed: 6199"), encoding="utf-8")
    assert config.read_text(encoding="utf-8") != text
    assert identity() != before
