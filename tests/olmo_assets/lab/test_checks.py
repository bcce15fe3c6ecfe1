"""Every check passes on the built lab, and fails when what its step wrote is damaged.

Each failing case copies the folders a check reads out of the session's lab, damages one
thing, and asserts the verdict and what the check says it found (literal text)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from olmo_assets.lab.params import Lab
from olmo_assets.lab.samples import text_start
from olmo_assets.lab.shards import BUILT_IN_SHARD
from olmo_assets.lab.steps.curation import (
    count_lines,
    dedup_accounting,
    mix,
    mix_accounting,
    no_contamination_left,
    tag_accounting,
    tag_source,
)
from olmo_assets.lab.steps.evaluation import downstream_rows_complete, perplexity_rows_complete
from olmo_assets.lab.steps.reports import model_report_complete
from olmo_assets.lab.steps.results import StepResult
from olmo_assets.lab.steps.tokenization import shards_readable
from olmo_assets.lab.steps.training import losses_finite

SHARD = BUILT_IN_SHARD
"""The one shard of a built-in source."""


def _copy(lab: Lab, target: Path, *folders: str) -> Lab:
    """A lab at ``target`` holding copies of ``folders`` (relative to the repository)."""
    (target / "params.yaml").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(lab.repo / "params.yaml", target / "params.yaml")
    for folder in folders:
        shutil.copytree(lab.repo / folder, target / folder)
    return Lab(target, lab.params, lab.values)


def _drop_last_row(folder: Path) -> None:
    path = sorted(folder.glob("*.parquet"))[-1]
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)


def _rewrite_lines(path: Path, edit: object) -> None:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(edit(lines))  # type: ignore[operator]


def test_every_check_passes_on_the_built_lab(built_lab: Lab, model_report: StepResult) -> None:
    del model_report
    results = {
        "tag code": tag_accounting(built_lab, "code", SHARD),
        "tag prose": tag_accounting(built_lab, "prose", SHARD),
        "dedup": dedup_accounting(built_lab),
        "mix": mix_accounting(built_lab),
        "contamination": no_contamination_left(built_lab),
        "shards code": shards_readable(built_lab, "code", SHARD),
        "shards prose": shards_readable(built_lab, "prose", SHARD),
        "losses": losses_finite(built_lab),
        "downstream": downstream_rows_complete(built_lab, 2, "arc_easy"),
        "perplexity": perplexity_rows_complete(built_lab, 4),
        "report": model_report_complete(built_lab),
    }
    assert {name: r.passed for name, r in results.items()} == dict.fromkeys(results, True)
    assert results["shards prose"].metadata == {"splits": "train, validation", "problems": "none"}
    # The small lab's code kept too few documents to hold any out.
    assert results["shards code"].metadata == {"splits": "train", "problems": "none"}
    assert results["mix"].metadata["shard_manifests_wrong"] == "none"
    assert results["losses"].metadata == {"steps": 4, "non_finite_at": "none", "missing_steps": 0}


def _row(rows: list[dict], **match: object) -> dict:
    (found,) = [row for row in rows if all(row[k] == v for k, v in match.items())]
    return found


def test_tag_accounting_fails_when_a_tagger_lost_a_row(built_lab: Lab, tmp_path: Path) -> None:
    lab = _copy(built_lab, tmp_path, "configs", "lab/raw/prose", "lab/tagged/prose")
    read = count_lines(lab.raw("prose", SHARD))
    tagger = sorted((lab.tagged("prose", SHARD) / "attributes").iterdir())[0]
    _drop_last_row(tagger / "prose")
    result = tag_accounting(lab, "prose", SHARD)
    assert not result.passed
    assert result.metadata["records_read"] == read
    assert result.metadata["mismatches"] == 1
    assert _row(result.tables["accounting"], tagger=tagger.name) == {
        "source": "prose",
        "tagger": tagger.name,
        "read": read,
        "written": read - 1,
        "quarantined": 0,
        "ok": False,
    }
    assert "quarantined" not in result.tables


def test_tag_accounting_fails_when_a_configured_tagger_wrote_nothing(
    built_lab: Lab, tmp_path: Path
) -> None:
    lab = _copy(built_lab, tmp_path, "configs", "lab/raw/prose", "lab/tagged/prose")
    taggers = sorted(p.name for p in (lab.tagged("prose", SHARD) / "attributes").iterdir())
    assert tag_accounting(lab, "prose", SHARD).metadata["taggers"] == ", ".join(taggers)
    shutil.rmtree(lab.tagged("prose", SHARD) / "attributes" / "gopher")
    result = tag_accounting(lab, "prose", SHARD)
    read = count_lines(lab.raw("prose", SHARD))
    assert not result.passed
    assert [row for row in result.tables["accounting"] if not row["ok"]] == [
        {
            "source": "prose",
            "tagger": "gopher",
            "read": read,
            "written": 0,
            "quarantined": 0,
            "ok": False,
        }
    ]


def test_tag_accounting_shows_the_quarantined_records(built_lab: Lab, tmp_path: Path) -> None:
    """A record without text and a line that is not JSON are quarantined by the tag step: the
    check passes (they are accounted for) and shows them, with the id where there is one."""
    lab = _copy(built_lab, tmp_path, "configs", "lab/raw/prose")
    (raw,) = sorted(lab.raw("prose", SHARD).glob("*.jsonl.gz"))
    read = count_lines(lab.raw("prose", SHARD))
    broken = [json.dumps({"id": "pydoc/no-text", "source": "prose"}) + "\n", "{not json\n"]
    _rewrite_lines(raw, lambda lines: [*lines, *broken])
    tag_source(lab, "prose", SHARD)
    result = tag_accounting(lab, "prose", SHARD)
    assert result.passed
    assert {row["quarantined"] for row in result.tables["accounting"]} == {2}
    quarantined = result.tables["quarantined"]
    assert [(r["file"], r["line"], r["id"]) for r in quarantined] == [
        ("lab/raw/prose/00000/part-00000.jsonl.gz", read + 1, "pydoc/no-text"),
        ("lab/raw/prose/00000/part-00000.jsonl.gz", read + 2, None),
    ]
    assert [r["raw_start"] for r in quarantined] == [broken[0].strip(), "{not json"]
    assert all(r["source"] == "prose" and r["error"] for r in quarantined)


def test_dedup_accounting_fails_when_a_row_is_lost(built_lab: Lab, tmp_path: Path) -> None:
    lab = _copy(built_lab, tmp_path, "lab/raw", "lab/dedup")
    _drop_last_row(lab.dedup / "attributes" / "dedup" / "code")
    result = dedup_accounting(lab)
    assert not result.passed
    read = count_lines(lab.raw("code", SHARD))
    assert _row(result.tables["accounting"], source="code", tagger="dedup") == {
        "source": "code",
        "tagger": "dedup",
        "read": read,
        "written": read - 1,
        "quarantined": 0,
        "ok": False,
    }


@pytest.mark.parametrize(
    ("damage", "change"),
    [(lambda lines: lines[:-1], -1), (lambda lines: [*lines, lines[0]], 1)],
    ids=["lost", "duplicated"],
)
def test_mix_accounting_fails_on_a_lost_or_duplicated_document(
    built_lab: Lab, tmp_path: Path, damage: object, change: int
) -> None:
    lab = _copy(built_lab, tmp_path, "lab/raw", "lab/curated")
    before = mix_accounting(lab)
    assert before.passed
    (documents,) = sorted((lab.curated / "documents" / "prose" / SHARD).glob("*.jsonl.gz"))
    kept = count_lines(documents.parent)
    _rewrite_lines(documents, damage)
    result = mix_accounting(lab)
    assert not result.passed
    row = _row(result.tables["accounting"], source="prose")
    assert (row["kept"], row["ok"]) == (kept + change, False)
    assert _row(before.tables["accounting"], source="prose")["kept"] == kept
    # The shard's manifest no longer names the file as it is.
    assert result.metadata["shard_manifests_wrong"] == f"prose/{SHARD}"


def test_mix_accounting_fails_without_a_shards_manifest(built_lab: Lab, tmp_path: Path) -> None:
    lab = _copy(built_lab, tmp_path, "lab/raw", "lab/curated")
    lab.curated_shard("code", SHARD).unlink()
    result = mix_accounting(lab)
    assert not result.passed
    assert result.metadata["shard_manifests_wrong"] == f"code/{SHARD}"
    assert all(row["ok"] for row in result.tables["accounting"])


def test_the_mix_keeps_each_shards_documents_and_names_them_in_its_manifest(
    built_lab: Lab,
) -> None:
    manifest = json.loads(built_lab.curated_shard("prose", SHARD).read_text(encoding="utf-8"))
    assert manifest["source"] == "prose" and manifest["shard"] == SHARD
    for split, kind in (("train", "documents"), ("validation", "validation")):
        files = sorted((built_lab.curated / kind / "prose" / SHARD).glob("*.jsonl.gz"))
        assert files, split
        assert [entry["path"] for entry in manifest["files"][split]] == [
            f"{kind}/prose/{SHARD}/{path.name}" for path in files
        ]
        assert [entry["size"] for entry in manifest["files"][split]] == [
            path.stat().st_size for path in files
        ]


def _first_kept(lab: Lab, source: str) -> dict:
    (documents,) = sorted((lab.curated / "documents" / source / SHARD).glob("*.jsonl.gz"))
    with gzip.open(documents, "rt", encoding="utf-8") as handle:
        return json.loads(handle.readline())


def _raw_text(lab: Lab, source: str, doc_id: str) -> str:
    for path in sorted(lab.raw(source).glob("*/*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if record["id"] == doc_id:
                    return record["text"]
    raise AssertionError(f"{doc_id} is not in {lab.raw(source)}")


def _flag(lab: Lab, source: str, doc_id: str, spans: list[dict]) -> None:
    """Mark one document of ``source`` contaminated in the dedup run's attributes."""
    (flags,) = sorted((lab.dedup / "attributes" / "decontam" / source).glob("*.parquet"))
    table = pq.read_table(flags)
    rows = table.to_pylist()
    for row in rows:
        if row["id"] == doc_id:
            row["decontam__is_contaminated"] = True
            row["decontam__contaminated_paragraphs"] = len(spans)
            row["decontam__spans"] = spans
    pq.write_table(table.from_pylist(rows, schema=table.schema), flags)


def test_no_contamination_left_fails_on_a_flagged_kept_document(
    built_lab: Lab, tmp_path: Path
) -> None:
    lab = _copy(built_lab, tmp_path, "lab/raw", "lab/dedup", "lab/curated")
    kept = _first_kept(lab, "prose")["id"]
    text = _raw_text(lab, "prose", kept)
    paragraph_end = text.index("\n") + 1
    _flag(lab, "prose", kept, [{"start": 0, "end": paragraph_end}])
    result = no_contamination_left(lab)
    assert not result.passed
    assert result.metadata == {
        "flagged": 1,
        "removed": 0,
        "contaminated_kept": 1,
        "sources_without_flags": "none",
    }
    assert result.tables["by_source"] == [
        {"source": "code", "flagged": 0, "removed": 0, "kept": 0},
        {"source": "prose", "flagged": 1, "removed": 0, "kept": 1},
    ]
    assert result.tables["flagged_examples"] == [
        {
            "source": "prose",
            "id": kept,
            "outcome": "kept",
            "matched_paragraphs": 1,
            "matched_text": text_start(text[:paragraph_end]),
            "text_start": text_start(text),
        }
    ]


def test_the_mix_removes_a_flagged_document_and_the_check_shows_it(
    built_lab: Lab, tmp_path: Path
) -> None:
    """Flagged after dedup, a kept document is removed by the next mix (Paloma's rule); the
    check passes and shows it, and the mix lists it among its removed examples."""
    lab = _copy(built_lab, tmp_path, "configs", "lab/raw", "lab/tagged", "lab/dedup")
    kept = _first_kept(built_lab, "prose")["id"]
    _flag(lab, "prose", kept, [])
    outcome = mix(lab)
    result = no_contamination_left(lab)
    assert result.passed
    assert result.metadata == {
        "flagged": 1,
        "removed": 1,
        "contaminated_kept": 0,
        "sources_without_flags": "none",
    }
    assert result.tables["flagged_examples"] == [
        {
            "source": "prose",
            "id": kept,
            "outcome": "decontamination/contaminated",
            "matched_paragraphs": 0,
            "matched_text": None,
            "text_start": text_start(_raw_text(lab, "prose", kept)),
        }
    ]
    assert outcome.metadata["removed_as_contaminated"] == 1
    assert {
        "source": "prose",
        "stage": "decontamination",
        "reason": "contaminated",
        "id": kept,
    } in [
        {k: row[k] for k in ("source", "stage", "reason", "id")}
        for row in outcome.tables["removed_examples"]
    ]


def test_no_contamination_left_fails_without_the_flags(built_lab: Lab, tmp_path: Path) -> None:
    lab = _copy(built_lab, tmp_path, "lab/dedup", "lab/curated")
    shutil.rmtree(lab.dedup / "attributes" / "decontam" / "prose")
    result = no_contamination_left(lab)
    assert not result.passed
    assert result.metadata["sources_without_flags"] == "prose"


def _shards(built_lab: Lab, tmp_path: Path) -> tuple[Lab, dict]:
    lab = _copy(built_lab, tmp_path, "lab/shards")
    manifest = json.loads((_train(lab) / "manifest.json").read_text(encoding="utf-8"))
    return lab, manifest


def _train(lab: Lab) -> Path:
    """The prose shard's training tokens."""
    return lab.token_shards("prose", SHARD) / "train"


def test_shards_readable_fails_on_a_short_token_file(built_lab: Lab, tmp_path: Path) -> None:
    lab, manifest = _shards(built_lab, tmp_path)
    part = _train(lab) / "part-00000.npy"
    part.write_bytes(part.read_bytes()[:-2])  # one uint16 token short
    result = shards_readable(lab, "prose", SHARD)
    tokens = manifest["files"][0]["num_tokens"]
    assert not result.passed
    assert result.metadata["problems"] == (
        f"train/part-00000.npy: {tokens - 1} tokens, manifest says {tokens}; "
        "train/part-00000.npy: sha256 differs from the manifest; "
        f"train/part-00000.npy: index span [{manifest['num_tokens'] - _last_length(lab)}, "
        f"{manifest['num_tokens']}) out of place"
    )


def _last_length(lab: Lab) -> int:
    index = pq.read_table(_train(lab) / "index.parquet").to_pydict()
    return int(index["end"][-1] - index["start"][-1])


def test_shards_readable_fails_on_an_id_outside_the_vocabulary(
    built_lab: Lab, tmp_path: Path
) -> None:
    lab, manifest = _shards(built_lab, tmp_path)
    part = _train(lab) / "part-00000.npy"
    data = bytearray(part.read_bytes())
    data[0:2] = (65535).to_bytes(2, "little")
    part.write_bytes(bytes(data))
    result = shards_readable(lab, "prose", SHARD)
    assert not result.passed
    assert result.metadata["problems"] == (
        "train/part-00000.npy: sha256 differs from the manifest; "
        f"train/part-00000.npy: token id 65535 >= vocab {manifest['tokenizer']['vocab_size']}"
    )


def test_shards_readable_fails_when_the_index_loses_a_document(
    built_lab: Lab, tmp_path: Path
) -> None:
    lab, manifest = _shards(built_lab, tmp_path)
    last = _last_length(lab)
    _drop_last_row(_train(lab))
    result = shards_readable(lab, "prose", SHARD)
    total = manifest["num_tokens"]
    assert not result.passed
    assert result.metadata["problems"] == (
        f"train/part-00000.npy: the index covers {total - last} of {total} tokens; "
        f"train: index has {manifest['num_documents'] - 1} documents, manifest says "
        f"{manifest['num_documents']}; "
        f"train: index spans {total - last} tokens, manifest says {total}"
    )


def test_losses_finite_fails_on_a_nan_or_a_missing_step(built_lab: Lab, tmp_path: Path) -> None:
    lab = _copy(built_lab, tmp_path)
    lab.run_dir.mkdir(parents=True)
    lines = (built_lab.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    last = json.loads(lines[-1]) | {"loss": "NaN"}
    (lab.run_dir / "metrics.jsonl").write_text(
        "\n".join([*lines[:-2], json.dumps(last)]) + "\n", encoding="utf-8"
    )
    result = losses_finite(lab)
    assert not result.passed
    assert result.metadata == {"steps": 3, "non_finite_at": "4", "missing_steps": 1}


def test_downstream_rows_complete_fails_on_a_missing_metric(built_lab: Lab, tmp_path: Path) -> None:
    lab = _copy(built_lab, tmp_path, "lab/eval/downstream/step2/arc_easy")
    path = lab.downstream(2, "arc_easy") / "results.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps([r for r in rows if r["metric"] != "acc_per_char"]))
    result = downstream_rows_complete(lab, 2, "arc_easy")
    assert not result.passed
    assert result.metadata == {
        "examples": 8,
        "missing": "acc_per_char",
        "not_finite_or_incomplete": "none",
    }


def test_perplexity_rows_complete_fails_on_a_nan(built_lab: Lab, tmp_path: Path) -> None:
    lab = _copy(built_lab, tmp_path, "lab/curated/validation", "lab/eval/perplexity/step4")
    path = lab.perplexity(4) / "results.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    for row in rows:
        if (row["source"], row["metric"], row.get("domain")) == ("prose", "bits_per_byte", None):
            row["value"] = float("nan")
    path.write_text(json.dumps(rows))
    result = perplexity_rows_complete(lab, 4)
    assert not result.passed
    assert result.metadata["not_finite"] == "prose/bits_per_byte"


def test_model_report_complete_fails_on_a_missing_score(
    built_lab: Lab, model_report: StepResult, tmp_path: Path
) -> None:
    del model_report
    lab = _copy(built_lab, tmp_path, "lab/reports/model")
    path = lab.model_report / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    del metrics["eval"]["step000004"]["winogrande"]
    path.write_text(json.dumps(metrics))
    result = model_report_complete(lab)
    assert not result.passed
    assert result.metadata == {"expected": 6, "missing": "step000004/winogrande"}


def test_shards_readable_fails_when_a_split_is_missing(built_lab: Lab, tmp_path: Path) -> None:
    lab, _ = _shards(built_lab, tmp_path)
    shutil.rmtree(lab.token_shards("prose", SHARD) / "validation")
    result = shards_readable(lab, "prose", SHARD)
    assert not result.passed
    assert result.metadata["problems"] == (
        "split folders ['train'] differ from the summary's ['train', 'validation']"
    )
