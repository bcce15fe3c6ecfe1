"""Batch schedule (with batch-size warmup) and ``olmo batch``: any step traced to its documents."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from olmo_nn.cli import batch as batch_cli
from olmo_nn.data import ShardWriter
from olmo_nn.train.batch import (
    BatchSchedule,
    batch_size_at,
    batch_start,
    reconstruct_batch,
    warmup_batch_sizes,
)
from olmo_nn.train.data_order import DataOrder, InstanceSpace
from olmo_nn.train.loader import BatchLoader

SEQ = 4
SEED = 3

#: Global instance -> (folder, source, id, span in the instance, span in the document).
#: Folder a: a0 [1,2,3] a1 [4..10] a2 [11,12,13]; folder b: b0 [20..25] b1 [30..34]; EOS 0.
EXPECTED_DOCUMENTS = {
    0: [("a", "web", "a0", [0, 4], [0, 4])],
    1: [("a", "web", "a1", [0, 4], [0, 4])],
    2: [("a", "web", "a1", [0, 4], [4, 8])],
    3: [("a", "web", "a2", [0, 4], [0, 4])],
    4: [("b", "books", "b0", [0, 4], [0, 4])],
    5: [("b", "books", "b0", [0, 3], [4, 7]), ("b", "code", "b1", [3, 4], [0, 1])],
    6: [("b", "code", "b1", [0, 4], [1, 5])],
}


def write_shards(folder: Path, documents: list[tuple[str, str, list[int]]]) -> str:
    with ShardWriter(folder, vocab_size=1000, eos_token_id=0) as writer:
        for source, doc_id, tokens in documents:
            writer.write(tokens, id=doc_id, source=source)
    return str(folder)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run as the trainer leaves it: config.yaml, data_order/, metrics.jsonl (steps 1-3)."""
    paths = [
        write_shards(
            tmp_path / "a",
            [
                ("web", "a0", [1, 2, 3]),
                ("web", "a1", [4, 5, 6, 7, 8, 9, 10]),
                ("web", "a2", [11, 12, 13]),
            ],
        ),
        write_shards(
            tmp_path / "b",
            [("books", "b0", [20, 21, 22, 23, 24, 25]), ("code", "b1", [30, 31, 32, 33, 34])],
        ),
    ]
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "run_name": "demo",
        "model": {"d_model": 8, "n_heads": 2, "n_layers": 1},
        "data": {
            "paths": paths,
            "sequence_length": SEQ,
            "seed": SEED,
            "num_workers": 0,
            "validation_paths": [],
        },
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "batch_size_warmup": None,
        "max_steps": 3,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    space = InstanceSpace(paths, SEQ)
    order = DataOrder.for_space(space, SEED)
    loader = BatchLoader(
        space,
        order,
        batch_size_at=lambda step: 4,
        micro_batch_size=2,
        stop_step=3,
        compute_fingerprint=True,
    )
    with (run / "metrics.jsonl").open("w") as metrics:
        for step_batch in loader:
            order.save(run, through_epoch=step_batch.last_epoch)
            record = {
                "step": step_batch.step,
                "loss": 6.9,
                "batch_fingerprint": step_batch.fingerprint,
            }
            metrics.write(json.dumps(record) + "\n")
    return run


def run_cli(argv: list[str]) -> int:
    """``olmo batch ...`` as ``olmo_nn.cli.main`` runs it (same error handling)."""
    parser = argparse.ArgumentParser(prog="olmo")
    batch_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as error:
        print(f"olmo {args.command}: error: {error}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------- schedule
def test_batch_start_without_warmup() -> None:
    starts = [batch_start(s, global_batch_size=8, sequence_length=4) for s in (1, 2, 10)]
    assert starts == [0, 8, 72]
    assert batch_size_at(5, global_batch_size=8, sequence_length=4) == 8
    with pytest.raises(ValueError, match="steps are numbered from 1"):
        batch_start(0, global_batch_size=8, sequence_length=4)


def test_batch_start_with_warmup_literal() -> None:
    # start 2 instances, doubling every 16 tokens (4 instances of 4 tokens), final 8.
    schedule = BatchSchedule(
        global_batch_size=8, sequence_length=4, warmup_start_instances=2, warmup_doubling_tokens=16
    )
    assert [schedule.size(s) for s in range(1, 7)] == [2, 2, 4, 8, 8, 8]
    assert [schedule.start(s) for s in range(1, 7)] == [0, 2, 4, 8, 16, 24]
    assert warmup_batch_sizes(8, 2) == [2, 4, 8]
    assert warmup_batch_sizes(8, None) == [8]
    with pytest.raises(ValueError, match="needs both start_instances and doubling_tokens"):
        batch_start(2, global_batch_size=8, sequence_length=4, warmup_start_instances=2)


@pytest.mark.parametrize(
    ("final", "seq", "start", "doubling"),
    [
        (8, 4, 2, 16),
        (1024, 2048, 4, 10**6),
        (96, 7, 3, 50),
        (8192, 2048, 1024, 100 * 10**9),
        (8, 3, 1, 1),
    ],
)
def test_batch_start_matches_a_step_by_step_sum(
    final: int, seq: int, start: int, doubling: int
) -> None:
    position = 0
    for step in range(1, 400):
        expected_size = min(final, start * 2 ** (position * seq // doubling))
        kwargs = {
            "global_batch_size": final,
            "sequence_length": seq,
            "warmup_start_instances": start,
            "warmup_doubling_tokens": doubling,
        }
        assert batch_start(step, **kwargs) == position
        assert batch_size_at(step, **kwargs) == expected_size
        position += expected_size


# ---------------------------------------------------------------------- olmo batch
def test_olmo_batch_json_lists_documents_and_matches(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Step 2 holds positions 4..7 of 7 instances: it spans the epoch boundary.
    assert run_cli(["batch", str(run_dir), "--step", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected_indices = DataOrder(7, SEED).global_indices(4, 4).tolist()
    assert report["indices"] == expected_indices
    assert (report["step"], report["start"], report["size"], report["epochs"]) == (2, 4, 4, [0, 1])
    recorded = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert report["recorded_batch_fingerprint"] == recorded[1]["batch_fingerprint"]
    assert report["batch_fingerprint"] == recorded[1]["batch_fingerprint"]
    assert report["matches"] is True
    for row, (instance, index) in enumerate(
        zip(report["instances"], expected_indices, strict=True)
    ):
        assert (instance["position"], instance["instance"]) == (row, index)
        listed = [
            (
                Path(instance["folder"]).name,
                d["source"],
                d["id"],
                d["instance_span"],
                d["document_span"],
            )
            for d in instance["documents"]
        ]
        assert listed == EXPECTED_DOCUMENTS[index]
    assert report["warnings"] == []


def test_olmo_batch_table(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["batch", str(run_dir), "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 1: 4 instances x 4 tokens, positions 0..3 (epoch 0)" in out
    assert "matches metrics.jsonl" in out
    for index in DataOrder(7, SEED).global_indices(0, 4).tolist():
        for _, _, doc_id, span, _ in EXPECTED_DOCUMENTS[index]:
            assert doc_id in out and f"{span[0]}-{span[1]}" in out
    assert run_cli(["batch", str(run_dir), "--step", "1", "--limit", "1"]) == 0
    assert "... and 3 more instances" in capsys.readouterr().out


def test_olmo_batch_reports_a_mismatch_and_unrecorded_steps(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[0] = json.dumps({"step": 1, "batch_fingerprint": "0123456789abcdef"})
    metrics.write_text("\n".join(lines) + "\n")
    assert run_cli(["batch", str(run_dir), "--step", "1"]) == 1
    assert "DOES NOT MATCH metrics.jsonl (0123456789abcdef)" in capsys.readouterr().out
    # A step the run never logged (or reached) is still reconstructible.
    assert run_cli(["batch", str(run_dir), "--step", "9", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matches"] is None and report["start"] == 32
    assert any("no batch_fingerprint for step 9" in w for w in report["warnings"])
    assert any("epoch(s) [4, 5] not saved" in w for w in report["warnings"])


def test_olmo_batch_errors(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["batch", str(tmp_path / "nowhere"), "--step", "1"]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    assert run_cli(["batch", str(run_dir), "--step", "0"]) == 2
    assert "steps are numbered from 1" in capsys.readouterr().err
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["data"]["seed"] = SEED + 1
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert run_cli(["batch", str(run_dir), "--step", "1"]) == 2
    assert "records seed=3 but config.yaml and the shards give 4" in capsys.readouterr().err


def test_reconstruction_reads_only_what_it_needs(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's windows only, and document indexes only of the folders the batch touches."""
    reads: list[int] = []
    opened: list[InstanceSpace] = []
    original_raw, original_init = InstanceSpace.raw, InstanceSpace.__init__

    def counting_raw(self: InstanceSpace, i: int) -> np.ndarray:
        reads.append(int(i))
        return original_raw(self, i)

    def recording_init(self: InstanceSpace, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)  # type: ignore[arg-type]
        opened.append(self)

    monkeypatch.setattr(InstanceSpace, "raw", counting_raw)
    monkeypatch.setattr(InstanceSpace, "__init__", recording_init)
    # Find a step (batch of 4) whose instances all come from folder a (instances 0-3).
    order = DataOrder(7, SEED)
    step = next(s for s in range(1, 50) if max(order.global_indices(4 * (s - 1), 4)) < 4)
    batch = reconstruct_batch(run_dir, step)
    assert batch.matches is None or batch.matches
    assert sorted(reads) == sorted(batch.indices)
    (space,) = opened
    first, second = (dataset.shards.__dict__ for dataset in space.datasets)
    assert "index_arrays" in first
    assert "index_arrays" not in second and "index" not in second and "memmaps" not in second


def test_olmo_batch_warns_when_the_shards_changed(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    shard_folder = Path(config["data"]["paths"][1])
    manifest = json.loads((shard_folder / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    (shard_folder / "manifest.json").write_text(json.dumps(manifest))
    assert run_cli(["batch", str(run_dir), "--step", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert any("the shards' manifests changed since the run" in w for w in report["warnings"])


def test_olmo_batch_checks_the_logged_schedule(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    for number, record in enumerate(records, start=1):
        record.update(batch_size=4, instances_consumed=4 * number)
    records[2]["instances_consumed"] = 99
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 3, "lo')
    assert run_cli(["batch", str(run_dir), "--step", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []
    assert run_cli(["batch", str(run_dir), "--step", "3", "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any("unreadable line" in w for w in warnings)
    assert any("instances_consumed=99" in w and "gives 4 and 12" in w for w in warnings)


def test_batch_warmup_must_double_up_to_the_final_size() -> None:
    with pytest.raises(ValueError, match="must be start_instances=1 times a power of 2"):
        batch_start(
            3,
            global_batch_size=5,
            sequence_length=3,
            warmup_start_instances=1,
            warmup_doubling_tokens=1,
        )
