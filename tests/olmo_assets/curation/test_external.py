"""Listing, sharding and reading a researcher's own corpus, locally and on S3 (moto)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from olmo_assets.curation.external import (
    SKIPPED_NON_HTML,
    Fields,
    FileChangedError,
    ReadStats,
    Rejected,
    SourceError,
    SourceFile,
    iter_documents,
    list_files,
    plan_shards,
    stat_files,
)
from tests.s3_server import S3Server, s3_server  # noqa: F401

LOOPS = topics["for"]
ASSERT = topics["assert"]
PASS = topics["pass"]
WARC_DATE = "2024-05-01T12:00:00Z"


def _jsonl(*records: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _read(
    files: list[SourceFile], fmt: str, fields: Fields | None = None
) -> tuple[list, ReadStats]:
    stats = ReadStats()
    items = list(iter_documents(files, fmt, fields or Fields(), stats))
    # Every record read is a document, quarantined or skipped (what the raw shard's accounting
    # check relies on), whatever was wrong with the files.
    assert stats.records == stats.documents + stats.rejected + sum(stats.skipped.values())
    return items, stats


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# --------------------------------------------------------------------------- listing
@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for name in (
        "b.jsonl",
        "a.jsonl",
        "sub/c.jsonl",
        "notes.txt",
        ".hidden.jsonl",
        "sub/.cache/d.jsonl",
    ):
        _write(root / name, _jsonl({"id": name, "text": PASS}))
    return root


def test_list_files_local_glob_folder_file_url_and_double_star(corpus: Path) -> None:
    def urls(*patterns: str) -> list[str]:
        return [Path(f.url).relative_to(corpus).as_posix() for f in list_files(patterns)]

    assert urls(f"{corpus}/*.jsonl") == ["a.jsonl", "b.jsonl"]
    assert urls(str(corpus)) == ["a.jsonl", "b.jsonl", "notes.txt", "sub/c.jsonl"]
    assert urls(f"file://{corpus}/b.jsonl") == ["b.jsonl"]
    assert urls(f"{corpus}/**/*.jsonl") == ["a.jsonl", "b.jsonl", "sub/c.jsonl"]
    # Hidden names are skipped unless the pattern asks for them.
    assert urls(f"{corpus}/.hidden*", f"{corpus}/sub/.cache/d.jsonl") == [
        ".hidden.jsonl",
        "sub/.cache/d.jsonl",
    ]
    # Overlapping patterns: sorted, each file once.
    assert urls(f"{corpus}/sub", f"{corpus}/b.jsonl", f"{corpus}/*.jsonl") == [
        "a.jsonl",
        "b.jsonl",
        "sub/c.jsonl",
    ]


def test_list_files_gives_absolute_path_size_and_mtime_fingerprint(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(corpus)
    (listed,) = list_files(["a.jsonl"])
    stat = os.stat(corpus / "a.jsonl")
    assert listed == SourceFile(
        str(corpus / "a.jsonl"), stat.st_size, f"mtime_ns:{stat.st_mtime_ns}"
    )
    assert stat_files([f"file://{listed.url}"]) == [listed]


def test_list_files_pattern_matching_nothing_is_named(corpus: Path) -> None:
    for pattern in (f"{corpus}/*.parquet", f"{corpus}/missing.jsonl", f"{corpus}/sub/*/*.jsonl"):
        with pytest.raises(FileNotFoundError, match="matches no file") as error:
            list_files([f"{corpus}/a.jsonl", pattern])
        assert pattern in str(error.value)


def test_list_files_on_s3(s3_server: S3Server) -> None:  # noqa: F811
    bodies = {
        f"cc/{i}.jsonl": _jsonl({"id": str(i), "text": LOOPS[: 100 * (i + 1)]}) for i in range(3)
    }
    bodies["cc/sub/3.jsonl"] = _jsonl({"id": "3", "text": ASSERT})
    bodies["other/4.jsonl"] = _jsonl({"id": "4", "text": PASS})
    bucket = s3_server.create_bucket("lab-list", bodies)

    listed = list_files([f"{bucket}/cc/*.jsonl"])
    assert listed == [
        SourceFile(
            f"s3://lab-list/cc/{i}.jsonl",
            len(bodies[f"cc/{i}.jsonl"]),
            f"etag:{hashlib.md5(bodies[f'cc/{i}.jsonl']).hexdigest()}",
        )
        for i in range(3)
    ]
    assert [f.url for f in list_files([f"{bucket}/cc"])] == [
        "s3://lab-list/cc/0.jsonl",
        "s3://lab-list/cc/1.jsonl",
        "s3://lab-list/cc/2.jsonl",
        "s3://lab-list/cc/sub/3.jsonl",
    ]
    assert stat_files([listed[0].url]) == listed[:1]
    # A file added to the bucket shows up in the next listing (no stale cache).
    s3_server.put_object("lab-list", "cc/5.jsonl", _jsonl({"id": "5", "text": PASS}))
    assert len(list_files([f"{bucket}/cc/*.jsonl"])) == 4
    with pytest.raises(FileNotFoundError, match=r"'s3://lab-list/cc/\*\.parquet' matches no file"):
        list_files([f"{bucket}/cc/*.parquet"])


def test_list_files_missing_bucket_is_a_source_error(s3_server: S3Server) -> None:  # noqa: F811
    for pattern in ("s3://no-such-bucket/cc/*.jsonl", "s3://no-such-bucket/cc/0.jsonl"):
        with pytest.raises(SourceError, match=r"bucket 'no-such-bucket' does not exist") as error:
            list_files([pattern])
        assert pattern in str(error.value)
        assert "AWS_ENDPOINT_URL" in str(error.value)
    with pytest.raises(SourceError, match=r"s3://no-such-bucket/x\.jsonl"):
        stat_files(["s3://no-such-bucket/x.jsonl"])


def test_list_files_without_credentials_or_backend_is_a_source_error(
    s3_server: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import s3fs

    s3_server.create_bucket("lab-private", {"web/0.jsonl": _jsonl({"id": "0", "text": PASS})})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(
            SourceError, match=r"s3://lab-private/web/\*.*Unable to locate credentials"
        ):
            list_files(["s3://lab-private/web/*.jsonl"])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(SourceError, match=r"gs://lab/web/0\.jsonl.*gcsfs"):
        list_files(["gs://lab/web/0.jsonl"])


# --------------------------------------------------------------------------- sharding
def _files(**sizes: int) -> list[SourceFile]:
    return [SourceFile(f"s3://b/{name}", size, f"etag:{name}") for name, size in sizes.items()]


def test_plan_shards_packs_sorted_files_greedily() -> None:
    files = _files(e=10, c=50, a=40, d=200, b=30)
    assert plan_shards(files, 100) == {
        "00000": ["s3://b/a", "s3://b/b"],
        "00001": ["s3://b/c"],
        "00002": ["s3://b/d"],  # bigger than a shard: a shard of its own
        "00003": ["s3://b/e"],
    }
    assert plan_shards(files, 1000) == {"00000": [f"s3://b/{n}" for n in "abcde"]}
    assert plan_shards([], 100) == {}


def test_plan_shards_keeps_previous_shards_when_files_are_added() -> None:
    first = plan_shards(_files(m=60, p=60, q=30), 100)
    assert first == {"00000": ["s3://b/m"], "00001": ["s3://b/p", "s3://b/q"]}
    # Files that sort before, between and after the old ones go to new shards only.
    grown = _files(a=30, m=60, n=50, p=60, q=30, z=80)
    second = plan_shards(grown, 100, previous=first)
    assert second == {
        "00000": ["s3://b/m"],
        "00001": ["s3://b/p", "s3://b/q"],
        "00002": ["s3://b/a", "s3://b/n"],
        "00003": ["s3://b/z"],
    }
    assert plan_shards(grown, 100, previous=second) == second
    # Order inside a previous shard is kept as given, not re-sorted.
    assert plan_shards(grown, 100, previous={"00007": ["s3://b/q", "s3://b/a"]}) == {
        "00007": ["s3://b/q", "s3://b/a"],
        "00008": ["s3://b/m"],
        "00009": ["s3://b/n"],
        "00010": ["s3://b/p"],
        "00011": ["s3://b/z"],
    }


def test_plan_shards_refuses_a_removed_file() -> None:
    previous = {"00000": ["s3://b/a"], "00001": ["s3://b/b", "s3://b/c"]}
    with pytest.raises(SourceError, match=r"s3://b/c \(shard 00001\)\. Files may only be added"):
        plan_shards(_files(a=1, b=1, d=1), 100, previous=previous)
    with pytest.raises(ValueError, match="lists s3://b/a in two shards"):
        plan_shards(_files(a=1), 100, previous={"00000": ["s3://b/a"], "00001": ["s3://b/a"]})
    with pytest.raises(ValueError, match="shard_bytes"):
        plan_shards(_files(a=1), 0)


# --------------------------------------------------------------------------- dolma
def test_dolma_plain_gzip_and_zstd_with_a_malformed_line(tmp_path: Path) -> None:
    first = (
        _jsonl({"id": "loops", "text": LOOPS, "added": "2024-01-01", "metadata": {"lang": "en"}})
        + b'{"id": "broken", "text": \n'
        + _jsonl(
            {
                "id": 7,
                "text": ASSERT,
                "url": "https://docs.python.org/3/reference/simple_stmts.html",
            }
        )
        + b'{"id": "no-text"}\n'
    )
    second = _jsonl({"id": "pass", "text": PASS, "created": "2023-12-31"})
    third = _jsonl({"id": "zstd", "text": LOOPS[:500]})
    _write(tmp_path / "0.jsonl", first)
    _write(tmp_path / "1.jsonl.gz", gzip.compress(second))
    _write(tmp_path / "2.jsonl.zst", zstandard.ZstdCompressor().compress(third))
    files = list_files([str(tmp_path)])

    items, stats = _read(files, "dolma", Fields(url="url"))
    url = str(tmp_path / "0.jsonl")
    assert items == [
        {"id": "loops", "text": LOOPS, "metadata": {"lang": "en"}, "added": "2024-01-01"},
        Rejected(url, 2, items[1].reason, b'{"id": "broken", "text": '),
        {
            "id": "7",
            "text": ASSERT,
            "metadata": {"url": "https://docs.python.org/3/reference/simple_stmts.html"},
        },
        Rejected(url, 4, "missing 'text' (id 'no-text')", b'{"id": "no-text"}'),
        {"id": "pass", "text": PASS, "metadata": {}, "created": "2023-12-31"},
        {"id": "zstd", "text": LOOPS[:500], "metadata": {}},
    ]
    assert items[1].reason.startswith("malformed JSON: ")
    assert (stats.files, stats.records, stats.documents, stats.rejected) == (3, 6, 4, 2)
    assert stats.bytes_read == sum(f.size for f in files)
    assert stats.skipped == {}


def test_dolma_field_mapping_and_corrupt_streams(tmp_path: Path) -> None:
    body = _jsonl(
        {"doc": "a", "body": PASS, "lang": "en", "metadata": {"lang": "xx", "year": 2020}},
        {"doc": "b", "body": ASSERT},
        {"body": LOOPS},
    )
    compressed = gzip.compress(body)
    _write(tmp_path / "0.jsonl.gz", compressed[:-30])  # truncated inside the stream
    _write(tmp_path / "1.jsonl", body)
    _write(tmp_path / "2.jsonl.zst", zstandard.ZstdCompressor().compress(body)[:-5])
    _write(tmp_path / "3.jsonl", b"")
    files = list_files([str(tmp_path)])

    items, stats = _read(files, "dolma", Fields(id="doc", text="body", metadata=("lang",)))
    documents = [item for item in items if isinstance(item, dict)]
    rejected = [(Path(r.url).name, r.line, r.reason) for r in items if isinstance(r, Rejected)]
    # Named columns win over the record's own metadata.
    assert documents[0] == {"id": "a", "text": PASS, "metadata": {"lang": "en", "year": 2020}}
    assert [d["id"] for d in documents] == ["a", "b", "a", "b"]
    assert rejected[0][:2] == ("0.jsonl.gz", 3) and rejected[0][2].startswith(
        "truncated compressed stream after line 2"
    )
    assert rejected[1] == ("1.jsonl", 3, "missing 'id' (id is read from 'doc', text from 'body')")
    assert rejected[2][:2] == ("2.jsonl.zst", 1) and rejected[2][2].startswith(
        "truncated compressed stream after line 0"
    )
    assert rejected[3] == ("3.jsonl", None, "empty file: no records")
    assert (stats.files, stats.documents, stats.rejected) == (4, 4, 4)


# --------------------------------------------------------------------------- parquet
def test_parquet_column_mapping_with_int_ids(tmp_path: Path) -> None:
    table = pa.table(
        {
            "hexsha": [17, 18, 19],
            "content": [LOOPS, None, PASS],
            "lang": ["Python", "Python", "Text"],
            "path": ["for.py", "none.py", "pass.txt"],
            "stars": [5, 6, 7],
        }
    )
    _write(tmp_path / "code" / "0.parquet", _parquet_bytes(table))
    _write(tmp_path / "code" / "1.parquet", _parquet_bytes(pa.table({"id": ["x"], "text": [PASS]})))
    files = list_files([f"{tmp_path}/code/*.parquet"])

    items, stats = _read(
        files, "parquet", Fields(id="hexsha", text="content", metadata=("lang", "path"))
    )
    url = str(tmp_path / "code" / "0.parquet")
    assert items[0] == {"id": "17", "text": LOOPS, "metadata": {"lang": "Python", "path": "for.py"}}
    assert items[1] == Rejected(
        url,
        2,
        "missing 'text' (id '18') (id is read from 'hexsha', text from 'content')",
        b'{"hexsha": 18, "content": null, "lang": "Python", "path": "none.py"}',
    )
    assert items[2] == {"id": "19", "text": PASS, "metadata": {"lang": "Text", "path": "pass.txt"}}
    assert items[3] == Rejected(
        str(tmp_path / "code" / "1.parquet"),
        None,
        "Parquet file has no column 'hexsha', 'content', 'lang', 'path' (columns: ['id', 'text']); "
        "fix the source's fields",
        b"",
    )
    # The file that cannot be read is one record, quarantined: the counts add up.
    assert (stats.records, stats.documents, stats.rejected) == (4, 2, 2)


# --------------------------------------------------------------------------- html
def test_html_pages_one_per_file_with_their_charset(tmp_path: Path) -> None:
    utf8 = f"<html><head><title>for</title></head><body><pre>{LOOPS[:200]}</pre></body></html>"
    latin = (
        '<html><head><meta charset="iso-8859-1"></head><body><p>Un café “noir”</p></body></html>'
    )
    _write(tmp_path / "pages" / "a" / "for.html", utf8.encode())
    _write(tmp_path / "pages" / "b" / "cafe.html", latin.encode("cp1252"))
    _write(tmp_path / "pages" / "c" / "bad.html", b"<p>caf\xe9</p>")  # no charset, not UTF-8
    _write(tmp_path / "pages" / "c" / "empty.html", b"")
    files = list_files([f"{tmp_path}/pages/**/*.html"])

    items, stats = _read(files, "html")
    urls = [f.url for f in files]
    assert items == [
        {"id": urls[0], "text": utf8, "metadata": {"url": urls[0]}},
        {"id": urls[1], "text": latin, "metadata": {"url": urls[1]}},
        {"id": urls[2], "text": "<p>caf\ufffd</p>", "metadata": {"url": urls[2]}},
        Rejected(urls[3], None, "empty file: no records", b""),
    ]
    # The empty file is a record of its own, quarantined: records = documents + rejected.
    assert (stats.files, stats.records, stats.documents, stats.rejected) == (4, 4, 3, 1)
    with pytest.warns(UserWarning, match="ignored for format 'html'"):
        iter_documents(files, "html", Fields(text="body"))
    with pytest.raises(ValueError, match="format 'csv' is not one of dolma, parquet, html, warc"):
        iter_documents(files, "csv")


# --------------------------------------------------------------------------- warc
def _warc(compress: bool) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=compress)

    def response(uri: str, content_type: str, body: bytes, record_id: str) -> None:
        http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
        headers = {"WARC-Date": WARC_DATE, "WARC-Record-ID": record_id}
        record = writer.create_warc_record(
            uri,
            "response",
            payload=io.BytesIO(body),
            length=len(body),  # known, so warcio needs no spool file to measure it
            http_headers=http,
            warc_headers_dict=headers,
        )
        writer.write_record(record)

    writer.write_record(writer.create_warcinfo_record("crawl.warc", {"software": "test"}))
    response(
        "https://docs.python.org/for",
        "text/html; charset=utf-8",
        f"<p>{LOOPS[:300]}</p>".encode(),
        "<urn:uuid:1>",
    )
    response("https://docs.python.org/logo.png", "image/png", b"\x89PNG\r\n", "<urn:uuid:2>")
    response(
        "https://example.org/café",
        "text/html; charset=ISO-8859-1",
        "<p>café</p>".encode("latin-1"),
        "<urn:uuid:3>",
    )
    request = StatusAndHeaders(
        "GET /for HTTP/1.1", [("Host", "docs.python.org")], is_http_request=True
    )
    writer.write_record(
        writer.create_warc_record("https://docs.python.org/for", "request", http_headers=request)
    )
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["crawl.warc", "crawl.warc.gz"])
def test_warc_html_responses_become_documents(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name, _warc(compress=name.endswith(".gz")))
    items, stats = _read(list_files([str(tmp_path / name)]), "warc")
    assert items == [
        {
            "id": "<urn:uuid:1>",
            "text": f"<p>{LOOPS[:300]}</p>",
            "metadata": {
                "url": "https://docs.python.org/for",
                "warc_date": WARC_DATE,
                "content_type": "text/html; charset=utf-8",
            },
        },
        {
            "id": "<urn:uuid:3>",
            "text": "<p>café</p>",
            "metadata": {
                "url": "https://example.org/café",
                "warc_date": WARC_DATE,
                "content_type": "text/html; charset=ISO-8859-1",
            },
        },
    ]
    assert stats.skipped == {"warcinfo record": 1, SKIPPED_NON_HTML: 1, "request record": 1}
    assert (stats.records, stats.documents, stats.rejected) == (5, 2, 0)


def test_warc_truncated_or_corrupt_is_rejected_with_the_record_offset(tmp_path: Path) -> None:
    data = _warc(compress=False)
    third = data.index(b"WARC/1.0", data.index(b"<urn:uuid:2>"))  # the record of <urn:uuid:3>
    fourth = data.index(b"WARC/1.0", third + 1)
    _write(tmp_path / "0-cut-in-body.warc", data[: fourth - 10])
    _write(tmp_path / "1-cut-in-headers.warc", data[: third + 200])
    _write(tmp_path / "2-garbage.warc", b"not a web archive\r\n\r\n")
    items, stats = _read(list_files([str(tmp_path)]), "warc")
    found = [
        (Path(i.url).name, i.line, i.reason) if isinstance(i, Rejected) else i["id"] for i in items
    ]
    assert found[0] == "<urn:uuid:1>"
    assert found[1] == (
        "0-cut-in-body.warc",
        third,
        f"truncated WARC record at byte {third}: the file ends inside the record",
    )
    assert found[2] == "<urn:uuid:1>"
    assert found[3] == (
        "1-cut-in-headers.warc",
        third,
        f"truncated WARC record at byte {third}: the file ends inside the record's headers",
    )
    assert found[4][:2] == ("2-garbage.warc", 0) and found[4][2].startswith(
        "corrupt WARC record at byte 0: Unknown archive format"
    )
    assert (stats.files, stats.documents, stats.rejected) == (3, 2, 3)


# --------------------------------------------------------------------------- S3 and changes
def test_dolma_and_parquet_read_from_s3(s3_server: S3Server) -> None:  # noqa: F811
    table = pa.table({"id": [1, 2], "text": [ASSERT, PASS], "url": ["https://a", "https://b"]})
    web = gzip.compress(_jsonl({"id": "for", "text": LOOPS}, {"id": "pass", "text": PASS}))
    bucket = s3_server.create_bucket(
        "lab-read",
        {
            "web/0.jsonl.gz": web,
            "code/0.parquet": _parquet_bytes(table),
        },
    )
    items, stats = _read(list_files([f"{bucket}/web/*.jsonl.gz"]), "dolma")
    assert items == [
        {"id": "for", "text": LOOPS, "metadata": {}},
        {"id": "pass", "text": PASS, "metadata": {}},
    ]
    items, _ = _read(list_files([f"{bucket}/code/"]), "parquet", Fields(url="url"))
    assert items == [
        {"id": "1", "text": ASSERT, "metadata": {"url": "https://a"}},
        {"id": "2", "text": PASS, "metadata": {"url": "https://b"}},
    ]
    assert (stats.files, stats.bytes_read) == (1, len(web))


def test_a_file_changed_after_listing_fails_the_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "0.jsonl", _jsonl({"id": "for", "text": LOOPS}))
    listed = list_files([path])
    _write(tmp_path / "0.jsonl", _jsonl({"id": "pass", "text": PASS}))
    with pytest.raises(
        FileChangedError, match=f"{re.escape(path)} changed while being read: listed as mtime_ns:"
    ) as error:
        list(iter_documents(listed, "dolma"))
    assert "before reading" in str(error.value) and "mixing versions" in str(error.value)


def test_a_file_changed_while_read_fails_after_its_documents(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "0.jsonl", _jsonl({"id": "for", "text": LOOPS}, {"id": "pass", "text": PASS})
    )
    documents = iter_documents(list_files([path]), "dolma")
    assert next(documents)["id"] == "for"
    _write(tmp_path / "0.jsonl", _jsonl({"id": "assert", "text": ASSERT}))
    with pytest.raises(FileChangedError, match="after reading"):
        list(documents)


def test_changed_or_missing_objects_on_s3(s3_server: S3Server) -> None:  # noqa: F811
    bucket = s3_server.create_bucket(
        "lab-change", {"web/0.jsonl": _jsonl({"id": "for", "text": LOOPS})}
    )
    listed = list_files([f"{bucket}/web/"])
    s3_server.put_object("lab-change", "web/0.jsonl", _jsonl({"id": "pass", "text": PASS}))
    with pytest.raises(
        FileChangedError,
        match=r"s3://lab-change/web/0\.jsonl changed while being read: listed as etag:",
    ):
        list(iter_documents(listed, "dolma"))
    s3_server.client.delete_object(Bucket="lab-change", Key="web/0.jsonl")
    with pytest.raises(SourceError, match=r"cannot read s3://lab-change/web/0\.jsonl"):
        list(iter_documents(listed, "dolma"))
