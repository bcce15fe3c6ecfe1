"""The curation chain end to end: accounting, quarantine of each bad input, idempotence."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from olmo_assets.curation.config import (
    CurationConfig,
    DedupConfig,
    RuleConfig,
    SourceConfig,
    SpanReplacementConfig,
)
from olmo_assets.curation.pipeline import curate

NO_DEDUP = DedupConfig(url=False, exact=False, paragraphs=False)


def _write(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _doc(doc_id: str, text: str) -> bytes:
    return json.dumps({"id": doc_id, "text": text}).encode()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    words = " ".join(["word"] * 60)
    _write(root / "web" / "a.jsonl", [
        _doc("w1", words),
        _doc("w2", "too short"),
        b"{not json",
        b'{"id": "bad-utf8", "text": "\xff\xfe"}',
        _doc("w1", "a duplicate id"),
        b'{"id": "no-text"}',
        b'{"text": "no id"}',
        _doc("big", "x" * 5000),
    ])  # fmt: skip
    _write(root / "web" / "b.jsonl", [_doc(f"w{i}", words + f" {i}") for i in range(3, 43)])
    (root / "web" / "empty.jsonl").write_bytes(b"")
    (root / "web" / "strange.jsonl.lz4").write_bytes(b"???")
    books = b"".join(_doc(f"b{i}", words + f" book {i}") + b"\n" for i in range(20))
    (root / "books").mkdir()
    (root / "books" / "c.jsonl.gz").write_bytes(gzip.compress(books, mtime=0))
    return root


def _config(root: Path, **changes: object) -> CurationConfig:
    config = CurationConfig(
        sources=[
            SourceConfig(name="web", paths=[str(root / "web")], validation_fraction=0.1),
            SourceConfig(name="books", paths=[str(root / "books")], sample_rate=2.0),
        ],
        taggers=["length"],
        rules=[
            RuleConfig(name="length_min_words", stage="quality", remove_if="length__words < 50")
        ],
        dedup=NO_DEDUP,
        max_document_bytes=4096,
        batch_size=8,
        workers=1,
    )
    return config.replace(**changes) if changes else config


def test_every_record_is_accounted_for(corpus: Path, tmp_path: Path) -> None:
    summary = curate(_config(corpus), tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    web, books = report["sources"]["web"], report["sources"]["books"]
    assert report["accounting_ok"] and web["accounting_ok"] and books["accounting_ok"]
    # web: 8 + 40 records + 1 empty file + 1 unknown extension = 50 input records.
    assert web["input_records"] == 50
    assert web["quarantined"] == 8
    assert web["quarantined_by_reason"] == {
        "document larger than max_document_bytes=4096": 1,
        "duplicate id": 1,
        "empty file": 1,
        "invalid UTF-8": 1,
        "malformed JSON": 1,
        "missing 'id'": 1,
        "missing 'text'": 1,
        "unknown file type '.jsonl.lz4'": 1,
    }
    assert web["removed_by_reason"] == {"quality/length_min_words": 1}
    assert (web["kept"], web["validation"]) == (37, 4)  # 41 good documents, ~10% held out
    assert books == {
        **books,
        "input_records": 20,
        "kept": 20,
        "output_documents": 40,
        "quarantined": 0,
    }
    assert summary.sources["web"].input_records == 50
    quarantine = pl.read_parquet(tmp_path / "out" / "quarantine" / "web")
    assert quarantine.height == 8
    bad_json = quarantine.filter(pl.col("error").str.starts_with("malformed JSON"))
    assert bad_json["raw"].to_list() == [b"{not json"] and bad_json["line"].to_list() == [3]
    removed = pl.read_parquet(tmp_path / "out" / "removed" / "web")
    assert removed.select("id", "stage", "reason").rows() == [("w2", "quality", "length_min_words")]
    with gzip.open(tmp_path / "out" / "documents" / "books" / "part-00000.jsonl.gz", "rt") as lines:
        ids = [json.loads(line)["id"] for line in lines]
    assert ids[:4] == ["b0", "b0#1", "b1", "b1#1"]  # up-sampled x2
    attributes = pl.read_parquet(tmp_path / "out" / "attributes" / "length" / "web")
    assert attributes.columns == [
        "id",
        "length__chars",
        "length__bytes",
        "length__words",
        "length__lines",
    ]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_rerun_is_byte_identical_for_any_worker_count(corpus: Path, tmp_path: Path) -> None:
    curate(_config(corpus), tmp_path / "one")
    curate(_config(corpus, workers=2), tmp_path / "two")
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


def test_a_batch_tagged_in_pieces_writes_the_same_bytes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several workers a batch is tagged in pieces (one record each here, some pieces
    only quarantined records); joined back, the output is the whole batch's, byte for byte."""
    from olmo_assets.curation import pipeline

    taggers = ["length", "gopher", "c4", "pii"]
    curate(_config(corpus, taggers=taggers), tmp_path / "one")
    monkeypatch.setattr(pipeline, "_TASK_BYTES", 1)
    curate(_config(corpus, taggers=taggers, workers=2), tmp_path / "pieces")
    assert _digest(tmp_path / "one") == _digest(tmp_path / "pieces")


def test_a_crash_leaves_no_output(corpus: Path, tmp_path: Path) -> None:
    config = _config(corpus, rules=[RuleConfig(name="broken", remove_if="no_such_column > 1")])
    with pytest.raises(ValueError, match="broken"):
        curate(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out*")) == []


def test_dedup_across_sources_keeps_the_first_copy(tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    shared = "a shared paragraph that appears in two documents of the corpus"
    _write(
        tmp_path / "raw" / "web" / "a.jsonl",
        [_doc("w1", words), _doc("w2", f"{words} extra\n{shared}\n")],
    )
    _write(
        tmp_path / "raw" / "books" / "b.jsonl",
        [_doc("b1", words), _doc("b2", f"other text {words}\n{shared}\n")],
    )
    config = CurationConfig(
        sources=[
            SourceConfig(name="web", paths=[str(tmp_path / "raw" / "web")]),
            SourceConfig(name="books", paths=[str(tmp_path / "raw" / "books")]),
        ],
        taggers=["length"],
        rules=[
            RuleConfig(
                name="exact_duplicate", stage="exact_dedup", remove_if="dedup__text_duplicate"
            )
        ],
        span_replacements=[SpanReplacementConfig(attribute="dedup__paragraph_spans_duplicate")],
        dedup=DedupConfig(
            url=True, exact=True, paragraphs=True, expected_documents=1000, expected_paragraphs=1000
        ),
        workers=1,
    )
    curate(config, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sources"]["web"]["kept"] == 2
    assert report["sources"]["books"]["removed_by_reason"] == {"exact_dedup/exact_duplicate": 1}
    with gzip.open(tmp_path / "out" / "documents" / "books" / "part-00000.jsonl.gz", "rt") as lines:
        (b2,) = [json.loads(line) for line in lines]
    assert (
        b2["id"] == "b2" and b2["text"] == f"other text {words}\n"
    )  # the shared paragraph is gone


def test_near_duplicates_and_contamination_are_removed(tmp_path: Path) -> None:
    base = " ".join(f"token{i}" for i in range(200))
    eval_paragraph = "the quick brown fox jumps over the lazy dog while the cat watches from afar"
    _write(tmp_path / "eval.jsonl", [json.dumps({"text": f"intro\n{eval_paragraph}\n"}).encode()])
    _write(tmp_path / "raw" / "web" / "a.jsonl", [
        _doc("original", base),
        _doc("near", base.replace("token50 ", "changed ")),
        _doc("leaked", f"{' '.join(f'other{i}' for i in range(80))}\n{eval_paragraph}\n"),
    ])  # fmt: skip
    _write(tmp_path / "raw" / "code" / "a.jsonl", [_doc("code-leak", f"x = 1\n{eval_paragraph}\n")])
    config = CurationConfig(
        sources=[
            SourceConfig(name="web", paths=[str(tmp_path / "raw" / "web")]),
            SourceConfig(name="code", paths=[str(tmp_path / "raw" / "code")], code=True),
        ],
        taggers=["length"],
        dedup=DedupConfig(
            url=False, exact=True, paragraphs=False, minhash=True, expected_documents=1000
        ),
        decontamination_paths=[str(tmp_path / "eval.jsonl")],
        workers=1,
    )
    curate(config, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sources"]["web"]["removed_by_reason"] == {
        "decontamination/contaminated": 1,
        "fuzzy_dedup/near_duplicate": 1,
    }
    assert report["sources"]["code"]["kept"] == 1  # code is exempt from decontamination
    removed = pl.read_parquet(tmp_path / "out" / "removed" / "web")
    assert sorted(removed["id"].to_list()) == ["leaked", "near"]


def test_curate_command_writes_olmo_token_shards(corpus: Path, tmp_path: Path) -> None:
    from olmo_nn.cli.main import main
    from olmo_nn.data import InstanceDataset, TokenShards

    mix = tmp_path / "mix.yaml"
    mix.write_text(
        "sources: []\ntaggers: [length]\nrules:\n"
        "  - {name: short, stage: quality, remove_if: 'length__words < 50'}\n"
        "dedup: {url: false, exact: true, paragraphs: false}\nmax_document_bytes: 4096\n"
    )
    out = tmp_path / "out"
    code = main(["data", "curate", "--config", str(mix), "--source", f"web={corpus / 'web'}",
                 "--source", f"books={corpus / 'books'}", "--output", str(out), "--workers", "1",
                 "--tokenize"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["accounting_ok"]
    shards = TokenShards(out / "shards")
    # web keeps w1 and w3..w42 (w2 is short); books keeps all 20.
    kept = sum(c["output_documents"] for c in report["sources"].values())
    assert shards.num_documents == kept == 61
    # "word" x 60 is 60 tokens; " 3".." 42" add one, " book N" two; EOS ends each document.
    assert report["tokens"]["shards"] == {"books": 20 * (62 + 1), "web": (60 + 1) + 40 * (61 + 1)}
    assert len(InstanceDataset(shards, sequence_length=16)) == shards.num_tokens // 16


def test_stage_by_stage_equals_one_pass(corpus: Path, tmp_path: Path) -> None:
    config = _config(corpus, dedup=DedupConfig(url=True, exact=True, paragraphs=True,
                                               expected_documents=1000, expected_paragraphs=1000))  # fmt: skip
    curate(config, tmp_path / "one_pass")
    tagged = curate(config, tmp_path / "tag", stages=("tag",))
    assert tagged.to_dict()["accounting_ok"]
    # 42 readable documents (w1, w2, w3..w42): no decisions are made before the mix.
    assert tagged.sources["web"].passed == 42 and tagged.sources["web"].kept == 0
    curate(config, tmp_path / "dedup", stages=("dedup",))
    curate(
        config,
        tmp_path / "mix",
        stages=("mix",),
        attributes_from=[tmp_path / "tag", tmp_path / "dedup"],
    )
    one, staged = _digest(tmp_path / "one_pass"), _digest(tmp_path / "mix")
    for key in one:
        if key.startswith(("documents/", "validation/", "removed/")) or key == "report.json":
            assert staged.get(key) == one[key], key
    # Attributes computed once, by the stage that owns them.
    assert (tmp_path / "tag" / "attributes" / "length").is_dir()
    assert not (tmp_path / "tag" / "attributes" / "dedup").exists()
    assert (tmp_path / "dedup" / "attributes" / "dedup").is_dir()


def test_mix_refuses_attributes_of_other_inputs(corpus: Path, tmp_path: Path) -> None:
    curate(_config(corpus), tmp_path / "tag", stages=("tag",))
    other = _config(corpus).replace(
        sources=[SourceConfig(name="web", paths=[str(corpus / "web" / "b.jsonl")])]
    )
    with pytest.raises(ValueError, match="do not line up with the documents"):
        curate(other, tmp_path / "mix", stages=("mix",), attributes_from=[tmp_path / "tag"])


def test_html_sources_are_extracted_first(tmp_path: Path) -> None:
    article = " ".join(
        f"This is sentence number {i} of a real article about curation." for i in range(12)
    )
    page = (
        "<html><head><title>t</title><script>var x = 1;</script></head><body>"
        "<nav><a href='/'>Home</a> <a href='/about'>About</a></nav>"
        f"<article><h1>Curation</h1><p>{article}</p><p>A second paragraph closes it.</p></article>"
        "<footer>Copyright footer</footer></body></html>"
    )
    _write(tmp_path / "raw" / "web" / "a.jsonl", [
        json.dumps({"id": "page", "text": page, "metadata": {"url": "https://example.com/a"}}).encode(),
        json.dumps({"id": "empty", "text": "<html><body></body></html>"}).encode(),
    ])  # fmt: skip
    config = CurationConfig(
        sources=[SourceConfig(name="web", paths=[str(tmp_path / "raw" / "web")], html=True)],
        taggers=["length"],
        dedup=NO_DEDUP,
        workers=1,
    )
    curate(config, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sources"]["web"]["removed_by_reason"] == {"extraction/no_extractable_text": 1}
    with gzip.open(tmp_path / "out" / "documents" / "web" / "part-00000.jsonl.gz", "rt") as lines:
        (kept,) = [json.loads(line) for line in lines]
    assert "sentence number 11" in kept["text"] and "A second paragraph closes it." in kept["text"]
    assert "var x" not in kept["text"] and "Copyright footer" not in kept["text"]


def test_committed_mix_configs_match_the_presets() -> None:
    from olmo_assets.curation.mixes import MIXES

    folder = Path(__file__).parents[3] / "configs" / "curation"
    for name, build in MIXES.items():
        assert CurationConfig.load(folder / f"{name}.yaml") == build(), name


def test_report_tables_and_plots(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from olmo_nn.cli.main import main

    curate(_config(corpus), tmp_path / "out")
    assert main(["data", "report", str(tmp_path / "out"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "removal_per_filter" in out and "length_min_words" in out
    tables = json.loads((tmp_path / "out" / "report" / "tables.json").read_text())
    assert tables["removal_per_filter"] == [
        {"source": "web", "stage": "quality", "reason": "length_min_words", "documents": 1}
    ]
    # Kept text: 37 web documents and 20 books x 2 copies, each with "word" 60 times.
    assert tables["top_words"][0] == {"word": "word", "occurrences": (37 + 40) * 60}
    assert tables["top_bigrams"][0]["bigram"] == "word word"
    assert pl.read_parquet(tmp_path / "out" / "report" / "removal_per_filter.parquet").height == 1
    assert (tmp_path / "out" / "report" / "stages.png").stat().st_size > 1000


def _lines(folder: Path) -> list[dict[str, object]]:
    records = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            records += [json.loads(line) for line in handle]
    return records


def test_outputs_by_folder_keep_each_input_folders_documents_apart(tmp_path: Path) -> None:
    words = " ".join(["word"] * 60)
    raw = tmp_path / "raw" / "web"
    _write(raw / "00000" / "a.jsonl", [_doc(f"a{i}", f"{words} {i}") for i in range(30)])
    _write(raw / "00001" / "b.jsonl", [_doc(f"b{i}", f"{words} b{i}") for i in range(30)])
    source = SourceConfig(name="web", paths=[str(raw)], validation_fraction=0.2, sample_rate=1.5)
    config = CurationConfig(
        sources=[source], taggers=["length"], dedup=NO_DEDUP, batch_size=7, workers=1
    )
    curate(config, tmp_path / "flat")
    curate(config.replace(sources=[source.replace(outputs_by_folder=True)]), tmp_path / "apart")
    for kind in ("documents", "validation"):
        flat = _lines(tmp_path / "flat" / kind / "web")
        first = _lines(tmp_path / "apart" / kind / "web" / "00000")
        second = _lines(tmp_path / "apart" / kind / "web" / "00001")
        # Batches of 7 span both files, yet each folder holds only its own documents
        # (sampled copies included), and together they are the flat run's, in order.
        assert first and second, kind
        assert {str(r["id"])[0] for r in first} == {"a"}
        assert {str(r["id"])[0] for r in second} == {"b"}
        assert first + second == flat
        assert not list((tmp_path / "apart" / kind / "web").glob("*.jsonl.gz"))
    assert any(
        "#" in str(r["id"]) for r in _lines(tmp_path / "apart" / "documents" / "web" / "00001")
    )


def test_outputs_by_folder_keep_one_file_open_per_source(tmp_path: Path) -> None:
    """A source of many folders (a lab's shards) is written folder by folder: with a limit of
    64 open files, 150 folders still curate (a file left open per folder would not)."""
    words = " ".join(["word"] * 60)
    raw = tmp_path / "raw" / "web"
    for k in range(150):
        _write(
            raw / f"{k:05d}" / "a.jsonl", [_doc(f"d{k}-{i}", f"{words} {k} {i}") for i in range(3)]
        )
    script = f"""
import resource
from olmo_assets.curation.config import CurationConfig, DedupConfig, SourceConfig
from olmo_assets.curation.pipeline import curate
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
source = SourceConfig(name="web", paths=[{str(raw)!r}], validation_fraction=0.3,
                      outputs_by_folder=True)
config = CurationConfig(sources=[source], taggers=["length"], batch_size=5, workers=1,
                        dedup=DedupConfig(url=False, exact=False, paragraphs=False))
curate(config, {str(tmp_path / "out")!r})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    written = {
        kind: {p.name: len(_lines(p)) for p in (out / kind / "web").iterdir()}
        for kind in ("documents", "validation")
    }
    assert set(written["documents"]) | set(written["validation"]) == {
        f"{k:05d}" for k in range(150)
    }
    assert sum(written["documents"].values()) + sum(written["validation"].values()) == 450
