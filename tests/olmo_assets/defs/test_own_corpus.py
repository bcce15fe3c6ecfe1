"""A researcher's own corpus through the platform: files of every format, local and on S3.

A copy of the repository whose sources are files outside it (Dolma JSON lines in three
compressions, HTML pages, a WARC crawl, a Parquet table of code) and Dolma files in a bucket
of a local S3 server, with its outputs stored in another bucket. ``olmo lab shards`` plans
and registers the shards, ``dvc repro`` curates and tokenizes everything (each stage recorded
in Dagster), and then:

* a new file makes one new shard, and only that shard's stages (and the stages that read
  every shard) run again; the other shards keep their keys and their content;
* a changed file makes DVC and Dagster both report the shard that read it out of date (and
  no other shard), and ``dvc repro`` reruns exactly that shard and what reads every shard;
* the stored outputs in the bucket are the local artifacts, byte for byte.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from olmo_assets.lab.shards import ShardPlan
from tests.s3_server import S3Server, s3_server  # noqa: F401

from .conftest import REPO
from .test_two_entry_points import RUNNING, Shell, copy_repository, dvc_stage
from .webserver import reload, stale, webserver

TOPICS = sorted(__import__("pydoc_data.topics", fromlist=["topics"]).topics.items())


def _prose(start: int, count: int) -> list[tuple[str, str]]:
    """``count`` Python documentation topics from ``start``: real prose, distinct per use."""
    return TOPICS[start : start + count]


def _dolma_lines(name: str, topics: list[tuple[str, str]]) -> bytes:
    records = [{"id": f"{name}/{t}", "text": text, "metadata": {"topic": t}} for t, text in topics]
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _html(title: str, text: str) -> str:
    paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n\n") if p.strip())
    return (
        f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a></nav>"
        f"<article><h1>{title}</h1>{paragraphs}</article><footer>© docs</footer></body></html>"
    )


def _warc(pages: list[tuple[str, str]]) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    for url, html in pages:
        headers = StatusAndHeaders(
            "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
        )
        record = writer.create_warc_record(
            url, "response", payload=io.BytesIO(html.encode()), http_headers=headers
        )
        writer.write_record(record)
    image = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
    writer.write_record(
        writer.create_warc_record(
            "https://docs.example/logo.png",
            "response",
            payload=io.BytesIO(b"\x89PNG\r\n"),
            http_headers=image,
        )
    )
    return out.getvalue()


def write_corpus(data: Path, s3: S3Server) -> dict[str, dict]:
    """Every format's files, and the sources of params.yaml that read them."""
    web = data / "web"
    web.mkdir(parents=True)
    # Three files of Dolma JSON lines, one per compression; one line is not JSON.
    (web / "a.jsonl.gz").write_bytes(gzip.compress(_dolma_lines("a", _prose(0, 12)), mtime=0))
    (web / "b.jsonl").write_bytes(_dolma_lines("b", _prose(12, 12)) + b"{not json\n")
    (web / "c.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(_dolma_lines("c", _prose(24, 12)))
    )
    pages = data / "pages"
    pages.mkdir()
    for title, text in _prose(40, 8):
        (pages / f"{title}.html").write_text(_html(title, text), encoding="utf-8")
    crawl = data / "crawl"
    crawl.mkdir()
    urls = [(f"https://docs.example/{t}", _html(t, text)) for t, text in _prose(50, 8)]
    (crawl / "crawl.warc.gz").write_bytes(_warc(urls))
    code = data / "code"
    code.mkdir()
    stdlib = Path(json.__file__).parent
    files = sorted(stdlib.glob("*.py"))
    table = pa.table(
        {
            "hexsha": [hashlib.sha1(p.read_bytes()).hexdigest() for p in files],
            "content": [p.read_text(encoding="utf-8") for p in files],
            "path": [f"json/{p.name}" for p in files],
        }
    )
    pq.write_table(table, code / "json.parquet")
    bucket = s3.create_bucket(
        "corpus",
        {
            f"web/{n}.jsonl.gz": gzip.compress(_dolma_lines(f"s3{n}", _prose(60 + 8 * n, 8)))
            for n in range(2)
        },
    )
    s3.create_bucket("lab-outputs")
    return {
        # Each file its own shard (shard_mb is tiny), to see shards behave.
        "web": {"paths": [f"{web}/*"], "format": "dolma", "shard_mb": 0.001},
        "pages": {"paths": [str(pages)], "format": "html"},
        "crawl": {"paths": [f"file://{crawl}/*.warc.gz"], "format": "warc"},
        "code": {
            "kind": "code",
            "paths": [f"{code}/*.parquet"],
            "format": "parquet",
            "id_field": "hexsha",
            "text_field": "content",
            "metadata_fields": ["path"],
        },
        "bucket": {"paths": [f"{bucket}/web/*.jsonl.gz"], "format": "dolma"},
    }


@dataclass
class Corpus:
    repo: Path
    data: Path
    s3: S3Server
    plans: dict[str, ShardPlan] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    ran: dict[str, set[str]] = field(default_factory=dict)
    dvc_status: dict[str, set[str]] = field(default_factory=dict)
    dagster: dict[str, dict[tuple[str, str | None], str]] = field(default_factory=dict)
    """What Dagster shows not fresh at each point."""
    remote_status: dict = field(default_factory=dict)
    """``dvc status -c`` against the S3 remote after the push."""
    quarantine: list[dict] = field(default_factory=list)
    """The web source's quarantined records after the first run."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Corpus:  # noqa: F811
    root = tmp_path_factory.mktemp("own_corpus")
    repo, data = root / "repo", root / "data"
    copy_repository(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["sources"] = write_corpus(data, s3_server)
    params["storage"] = "s3://lab-outputs/lab"
    params["eval"] |= {"tasks": ["arc_easy"], "checkpoints": [100]}
    # One process per curation and tokenization stage: a pool of spawned workers costs each
    # of the many stage runs seconds, and no artifact depends on it (LabParams.workers).
    params["workers"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for lock in ("dvc.lock", "sources/dvc.lock"):
        (repo / lock).unlink(missing_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_PIPES", "DVC_")) and k != "OLMO_LAB_REPO"
    }
    dvc_bin = Path(shutil.which("dvc") or REPO / ".venv-dvc" / "bin" / "dvc")
    env |= {
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), str(dvc_bin.parent), env["PATH"]]
        ),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DAGSTER_HOME": str(repo / ".dagster"),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    shell = Shell(repo, env)
    result = Corpus(repo, data, s3_server)
    olmo = (sys.executable, "-m", "olmo_nn.cli.main")

    def step(name: str, *command: str) -> str:
        output = shell(*command)
        result.outputs[name] = output
        result.ran[name] = set(RUNNING.findall(output))
        return output

    def status(name: str) -> None:
        # The stages up to the token shards (what the repros run).
        done = shell("dvc", "status", "--json", "--with-deps", "tokenize")
        result.dvc_status[name] = set(json.loads(done))

    step("shards", *olmo, "lab", "shards")
    result.plans["first"] = ShardPlan.load_file(repo / "sources" / "shards.yaml")
    shell("git", "init", "-q")
    shell("git", "add", "-A")
    shell("git", "commit", "-qm", "a lab over files")
    step("repro", "dvc", "repro", "tokenize")
    status("after repro")
    # DVC's cache to an S3-compatible remote, as to the local one.
    s3_server.create_bucket("lab-dvc")
    shell("dvc", "remote", "add", "--local", "store", "s3://lab-dvc/cache")
    step("push", "dvc", "push", "-r", "store")
    # (DVC warns, on the same output, about the stages that have not run: its last line.)
    remote = shell("dvc", "status", "-c", "-r", "store", "--json").strip().splitlines()[-1]
    result.remote_status = json.loads(remote)
    quarantined = sorted((repo / "lab/raw/web").glob("*/quarantine/*.parquet"))
    result.quarantine = [row for path in quarantined for row in pq.read_table(path).to_pylist()]

    with webserver(repo / "workspace.yaml", repo, dict(env, OLMO_LAB_REPO=str(repo)),
                   root / "webserver.log") as url:  # fmt: skip
        result.dagster["after repro"] = stale(url)
        # A new file: one new shard.
        (data / "web" / "d.jsonl").write_bytes(_dolma_lines("d", _prose(36, 4)))
        step("new file", *olmo, "lab", "shards")
        result.plans["new file"] = ShardPlan.load_file(repo / "sources" / "shards.yaml")
        reload(url)
        result.dagster["new file"] = stale(url)
        status("new file")
        step("repro new file", "dvc", "repro", "tokenize")
        reload(url)
        result.dagster["after new file"] = stale(url)
        # A changed file: its shard is out of date in both tools.
        (data / "web" / "b.jsonl").write_bytes(_dolma_lines("b", _prose(12, 11)))
        status("changed file")
        step("observe", *olmo, "lab", "shards")
        result.dagster["changed file"] = stale(url)
        step("repro changed file", "dvc", "repro", "tokenize")
        status("after changed file")
        result.dagster["after changed file"] = stale(url)
    return result


def _new(corpus: Corpus, before: str, after: str) -> set[str]:
    """The DVC stages behind what Dagster shows not fresh at ``after`` but not ``before``."""
    shown = set(corpus.dagster[after]) - set(corpus.dagster[before])
    return {dvc_stage(key, partition) for key, partition in shown}


def _lab_documents(repo: Path, folder: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in sorted((repo / "lab" / folder).glob("*/*/*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            found.setdefault(path.parts[-3], []).extend(json.loads(line) for line in handle)
    return found


def test_every_format_goes_through_curation_and_tokenization(corpus: Corpus) -> None:
    assert corpus.dvc_status["after repro"] == set()
    raw = _lab_documents(corpus.repo, "raw")
    assert set(raw) == {"web", "pages", "crawl", "code", "bucket"}
    crawl = {doc["metadata"]["url"]: doc for doc in raw["crawl"]}
    assert sorted(crawl) == sorted(f"https://docs.example/{t}" for t, _ in _prose(50, 8))
    assert all(doc["metadata"]["warc_date"] for doc in crawl.values())
    code = {doc["id"]: doc["metadata"]["path"] for doc in raw["code"]}
    assert sorted(code.values()) == sorted(
        f"json/{p.name}" for p in Path(json.__file__).parent.glob("*.py")
    )
    # Each source shard is tokenized on its own: lab/shards/<source>/<shard>/train.
    tokenized = {}
    for path in sorted((corpus.repo / "lab/shards").glob("*/*/train/index.parquet")):
        tokenized[path.parts[-4], path.parts[-3]] = set(pq.read_table(path)["source"].to_pylist())
    planned = corpus.plans["new file"].files  # (the lab as the fixture leaves it)
    assert sorted(tokenized) == sorted((s, k) for s, shards in planned.items() for k in shards)
    assert all(sources == {source} for (source, _), sources in tokenized.items())


def test_a_malformed_record_is_quarantined_in_its_shard(corpus: Corpus) -> None:
    assert [(Path(r["file"]).name, r["line"], r["raw"]) for r in corpus.quarantine] == [
        ("b.jsonl", 13, b"{not json")
    ]
    assert "quarantined=1" in corpus.outputs["repro"]


def test_shards_are_stable_and_a_new_file_is_one_new_shard(corpus: Corpus) -> None:
    first, after = corpus.plans["first"].files, corpus.plans["new file"].files
    assert sorted(first["web"]) == ["00000", "00001", "00002"]
    assert {k: v for k, v in after["web"].items() if k in first["web"]} == first["web"]
    assert after["web"]["00003"] == [str(corpus.data / "web" / "d.jsonl")]
    assert {s: v for s, v in after.items() if s != "web"} == {
        s: v for s, v in first.items() if s != "web"
    }
    new = {"sources/dvc.yaml:source-web-00003", "tag@web-00003", "tokenize@web-00003"}
    # Both tools show the new shard's stages to run, and nothing else.
    assert corpus.dvc_status["new file"] == new
    assert _new(corpus, "after repro", "new file") == new
    # A new mix: every shard's tokens are made again from it.
    assert corpus.ran["repro new file"] == new | {"dedup", "mix"} | _tokenize(corpus, "new file")
    assert corpus.dagster["after new file"] == corpus.dagster["after repro"]


def _tokenize(corpus: Corpus, plan: str) -> set[str]:
    """Every planned shard's tokenization stage."""
    shards = corpus.plans[plan].files
    return {f"tokenize@{source}-{shard}" for source, keys in shards.items() for shard in keys}


def test_a_changed_file_makes_exactly_its_dependents_stale(corpus: Corpus) -> None:
    changed = "sources/dvc.yaml:source-web-00001"
    # Both tools show the shard that read the file out of date, and no other shard; what is
    # made from it follows when it reruns.
    assert corpus.dvc_status["changed file"] == {changed}
    assert _new(corpus, "after new file", "changed file") == {changed}
    dependents = {changed, "tag@web-00001", "dedup", "mix"} | _tokenize(corpus, "new file")
    assert corpus.ran["repro changed file"] == dependents
    assert corpus.dagster["after changed file"] == corpus.dagster["after repro"]
    assert corpus.dvc_status["after changed file"] == set()


def test_outputs_are_stored_in_the_bucket_as_they_are_here(corpus: Corpus) -> None:
    client = corpus.s3.client
    listed = client.list_objects_v2(Bucket="lab-outputs", Prefix="lab/")["Contents"]
    stored = {o["Key"].removeprefix("lab/"): o["ETag"].strip('"') for o in listed}
    local = {
        p.relative_to(corpus.repo / "lab").as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for folder in ("raw", "tagged", "dedup", "curated", "shards")
        for p in (corpus.repo / "lab" / folder).rglob("*")
        if p.is_file()
    }
    assert local and {k: stored.get(k) for k in local} == local
    assert re.search(r"stored_at=s3://lab-outputs/lab/raw/web/00000", corpus.outputs["repro"])


def test_dvc_pushes_to_an_s3_compatible_remote(corpus: Corpus) -> None:
    assert re.search(r"^\d+ files pushed", corpus.outputs["push"], re.M), corpus.outputs["push"]
    assert corpus.remote_status == {}
    listed = corpus.s3.client.list_objects_v2(Bucket="lab-dvc", Prefix="cache/")
    assert listed["KeyCount"] > 0


def test_a_pattern_matching_nothing_names_itself(corpus: Corpus, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(corpus.repo / "configs", repo / "configs")
    params = yaml.safe_load((corpus.repo / "params.yaml").read_text())
    params["sources"] = {"web": {"paths": [str(corpus.data / "nothing-*.jsonl")]}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, "-m", "olmo_nn.cli.main", "lab", "shards", "--repo", str(repo)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
    )
    assert done.returncode == 2
    assert str(corpus.data / "nothing-*.jsonl") in done.stderr
    assert "source 'web'" in done.stderr
