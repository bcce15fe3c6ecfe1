"""The stage command outside Dagster (from a shell, or as ``dvc repro`` runs it) records a
Dagster run of its assets that leaves the same record as a run launched from Dagster."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance, materialize
from dagster._core.event_api import EventLogRecord  # the record type fetch_materializations returns
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from olmo_assets.defs.record import RECORDED_BY_TAG
from olmo_assets.lab.hashing import dvc_md5
from olmo_assets.lab.params import Lab
from olmo_assets.lab.pipeline import StageRun, code_version, stage_named
from olmo_assets.lab.shards import BUILT_IN_SHARD as SHARD

from .conftest import run_stage
from .test_materialize import pipes_assets

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*expected_writer_count:dagster.PreviewWarning",
    "ignore:AssetExecutionContext.run_id is deprecated:DeprecationWarning",
)


def latest(instance: DagsterInstance, key: str) -> EventLogRecord:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey.from_user_string(key)), limit=1
    ).records
    assert records, f"no materialization of {key}"
    return records[0]


def test_a_shell_run_is_recorded_as_a_dagster_run_with_provenance(
    small_lab: Lab, dagster_home: Path
) -> None:
    for arguments in (("source", "prose", SHARD), ("tag", "prose", SHARD)):
        done = run_stage(small_lab, dagster_home, *arguments)
        assert done.returncode == 0, done.stderr
    assert "attributes/prose[00000]: data version" in done.stdout
    assert "check attributes/prose.accounting: passed" in done.stdout
    assert "is not a DVC repository: nothing committed to DVC" in done.stdout

    with DagsterInstance.get() as instance:
        record = latest(instance, "attributes/prose")
        run = instance.get_run_by_id(record.run_id)
        assert run is not None and run.tags[RECORDED_BY_TAG] == "shell"
        assert run.tags["olmo/stage"] == "tag@prose-00000"
        assert run.job_name == "curation_shards_prose"
        assert run.tags["dagster/partition"] == SHARD
        event = record.asset_materialization
        assert event is not None and event.tags is not None
        assert event.tags["dagster/data_version"] == dvc_md5(small_lab.tagged("prose", SHARD))
        tag = StageRun(stage_named("tag"), ("prose", SHARD))
        assert event.tags["dagster/code_version"] == code_version(small_lab, tag)
        raw = latest(instance, "raw_source/prose").asset_materialization
        assert raw is not None and raw.tags is not None
        # Dagster wrote the provenance itself: the input's data version at this run.
        # (A partitioned input's version is Dagster's hash over the partitions read.)
        read = hashlib.sha256(raw.tags["dagster/data_version"].encode()).hexdigest()
        assert event.tags["dagster/input_data_version/raw_source/prose"] == read
        assert int(str(event.metadata["input_records"].value)) > 0
        assert event.metadata["command"].value == "python -m olmo_assets.defs.stage tag prose 00000"

        (check,) = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey(["attributes", "prose"]), "accounting"), limit=1
        )
        assert check.status == AssetCheckExecutionRecordStatus.SUCCEEDED

        # One pipeline, two entry points: a Pipes run of the same stage leaves the same record.
        assets, resources = pipes_assets(small_lab, "raw_source/prose")
        result = materialize(assets, instance=instance, resources=resources, partition_key=SHARD)
        assert result.success
        piped = latest(instance, "raw_source/prose")
        assert piped.run_id == result.run_id
        assert piped.asset_materialization is not None and raw is not None
        piped_tags = piped.asset_materialization.tags or {}
        for name in ("dagster/data_version", "dagster/code_version"):
            assert piped_tags[name] == raw.tags[name]
        assert set(piped.asset_materialization.metadata) == set(raw.metadata)


def test_a_run_under_dvc_says_so(small_lab: Lab, dagster_home: Path) -> None:
    done = run_stage(
        small_lab,
        dagster_home,
        *("source", "prose", SHARD),
        env={"DVC_STAGE": "sources/dvc.yaml:source-prose-00000"},
    )
    assert done.returncode == 0, done.stderr
    # DVC records the stage itself: the command commits nothing to it.
    assert "DVC" not in done.stdout.replace("recorded in Dagster", "")
    with DagsterInstance.get() as instance:
        record = latest(instance, "raw_source/prose")
        run = instance.get_run_by_id(record.run_id)
        assert run is not None and run.tags[RECORDED_BY_TAG] == "dvc"
        # In the stage's named job, with a line saying who ran the step.
        assert run.job_name == "curation_shards_prose"
        event = record.asset_materialization
        assert event is not None
        assert str(event.metadata["launched_by"].value).startswith("dvc repro: DVC ran the step")


def test_stage_failures_name_the_cause(small_lab: Lab, dagster_home: Path) -> None:
    missing = run_stage(small_lab, dagster_home, "tag", "code", SHARD)
    assert missing.returncode == 1
    assert missing.stderr.endswith(
        f"stage tag code 00000 failed: source 'code': {small_lab.raw('code', SHARD)} does not "
        "exist; materialize raw_source/code partition(s) 00000 first (or `dvc repro "
        "sources/dvc.yaml:source-code-00000`)\n"
    )
    assert "Traceback" not in missing.stderr

    unknown = run_stage(small_lab, dagster_home, "source", "nope", SHARD)
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "stage source nope 00000 failed: unknown source 'nope'; params.yaml names code, prose\n"
    )


@pytest.mark.parametrize("passes", [True, False], ids=["passed", "failed"])
def test_only_a_stage_whose_checks_pass_is_committed_to_dvc(
    small_lab: Lab, dagster_home: Path, monkeypatch: pytest.MonkeyPatch, passes: bool
) -> None:
    """From a shell in a DVC repository: committed when every check passes; otherwise
    recorded in Dagster with the failed check, not committed, and the exit status is 1."""
    from olmo_assets.defs import stage as command
    from olmo_assets.lab import pipeline
    from olmo_assets.lab.steps.results import CheckResult

    assert run_stage(small_lab, dagster_home, "source", "prose", SHARD).returncode == 0
    (small_lab.repo / ".dvc").mkdir()  # the stage now finds a DVC repository
    commits: list[str] = []
    monkeypatch.setattr(command, "dvc_executable", lambda lab: "dvc")
    monkeypatch.setattr(
        command, "commit_to_dvc", lambda lab, run, dvc: commits.append(run.dvc_name) or "ok"
    )
    execute = pipeline.StageRun.execute

    def judged(self: pipeline.StageRun, lab: Lab) -> tuple:
        result, checks = execute(self, lab)
        return result, [(a, c, CheckResult(passes, {"forced": True})) for a, c, _ in checks]

    monkeypatch.setattr(pipeline.StageRun, "execute", judged)
    run = pipeline.parse_run(small_lab, "tag", ["prose", SHARD])
    assert command.run_stage(small_lab, run) == (0 if passes else 1)
    assert commits == (["tag@prose-00000"] if passes else [])
    with DagsterInstance.get() as instance:
        (check,) = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey(["attributes", "prose"]), "accounting"), limit=1
        )
        expected = "SUCCEEDED" if passes else "FAILED"
        assert check.status == AssetCheckExecutionRecordStatus[expected]
