"""A corpus of about 1 GB, brought in as a researcher brings their own, through `dvc repro`.

    .venv/bin/python benchmarks/corpus_scale.py [--gb 1.0] [--shard-mb 128] [--workdir DIR]

It writes a multi-source corpus from real text this machine has, in three of the formats a
source can have (nothing is downloaded):

* ``code``: every Python file of the standard library and the installed packages, one
  document each, as Parquet with another schema (``content``, ``path``, ``hexsha``);
* ``web``: the installed packages' documentation files (.md, .rst, .txt) and the Python
  documentation topics as Dolma jsonl.gz; pages made of their paragraphs, drawn with a fixed
  seed, fill it up to its share (so it has the repeated paragraphs a crawl has);
* ``crawl``: HTML pages of such paragraphs in WARC files (with a non-HTML record now and then).

Then, in a copy of this repository whose ``params.yaml`` names those sources: ``olmo lab
shards`` plans them into shards, and ``dvc repro tokenize`` runs every stage up to the token
shards, each stage recorded in Dagster. The script prints, per stage kind, the time, the
input text it read per second, and the peak RSS of the stage's process and of its largest
worker (as the stage command reports them); then a second ``dvc status`` (DVC's hashes
cached: nothing is hashed again), ``dvc push`` of the whole cache to the local remote, and
to an S3-compatible one (moto's server, started by the script), checked in sync with ``dvc
status -c``. Results go to ``benchmarks/results/corpus_scale.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "corpus_scale.json"
SHARES = {"code": 0.35, "web": 0.5, "crawl": 0.15}
"""Each source's share of the corpus's text."""
FILE_MB = 64
"""About this many MB of text per file written."""


def _real_files(suffixes: tuple[str, ...]) -> Iterator[Path]:
    roots = {Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])}
    for root in sorted(roots):
        for path in sorted(root.rglob("*")):
            if path.suffix in suffixes and path.is_file() and "__pycache__" not in path.parts:
                yield path


def _text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    return text if text.strip() else None


def _paragraphs() -> list[str]:
    """Prose paragraphs of the documentation on this machine."""
    from pydoc_data.topics import topics

    texts = list(topics.values())
    texts += [t for p in _real_files((".md", ".rst", ".txt")) if (t := _text(p))]
    return [p.strip() for t in texts for p in t.split("\n\n") if len(p.strip()) > 200]


def _page(rng: random.Random, paragraphs: list[str]) -> str:
    return "\n\n".join(rng.sample(paragraphs, rng.randint(3, 12)))


def write_code(folder: Path, target: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    written = part = 0
    rows: dict[str, list[str]] = {"hexsha": [], "content": [], "path": []}
    size = 0
    for path in _real_files((".py",)):
        text = _text(path)
        if text is None:
            continue
        rows["hexsha"].append(hashlib.sha1(text.encode()).hexdigest())
        rows["content"].append(text)
        rows["path"].append(path.as_posix())
        size += len(text.encode())
        if size >= FILE_MB * 1e6 or written + size >= target:
            pq.write_table(pa.table(rows), folder / f"code-{part:04d}.parquet")
            written, part, size = written + size, part + 1, 0
            rows = {k: [] for k in rows}
            if written >= target:
                break
    if rows["content"]:
        pq.write_table(pa.table(rows), folder / f"code-{part:04d}.parquet")
        written += size
    return written


def write_web(folder: Path, target: int, paragraphs: list[str]) -> int:
    from pydoc_data.topics import topics

    folder.mkdir(parents=True)
    rng = random.Random(1234)
    real = [(f"pydoc/{k}", v) for k, v in sorted(topics.items())]
    real += [(p.as_posix(), t) for p in _real_files((".md", ".rst", ".txt")) if (t := _text(p))]

    def documents() -> Iterator[tuple[str, str]]:
        yield from real
        for n in range(10**9):
            yield f"page/{n}", _page(rng, paragraphs)

    docs = documents()
    written = part = 0
    while written < target:
        size = 0
        path = folder / f"web-{part:04d}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
            while size < FILE_MB * 1e6 and written + size < target:
                doc_id, text = next(docs)
                out.write(json.dumps({"id": doc_id, "text": text, "source": "web"}) + "\n")
                size += len(text.encode())
        written, part = written + size, part + 1
    return written


def write_crawl(folder: Path, target: int, paragraphs: list[str]) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    folder.mkdir(parents=True)
    rng = random.Random(4321)
    written = part = n = 0
    while written < target:
        with (folder / f"crawl-{part:04d}.warc.gz").open("wb") as out:
            writer = WARCWriter(out, gzip=True)
            size = 0
            while size < FILE_MB * 1e6 and written + size < target:
                body = "".join(f"<p>{p}</p>" for p in _page(rng, paragraphs).split("\n\n"))
                html = f"<html><body><nav>menu</nav><article>{body}</article></body></html>"
                kind = "image/png" if n % 50 == 49 else "text/html; charset=utf-8"
                headers = StatusAndHeaders("200 OK", [("Content-Type", kind)], protocol="HTTP/1.1")
                payload = html.encode() if kind.startswith("text") else b"\x89PNG\r\n"
                # A record id and date of its own (warcio draws a random id and takes the
                # clock's date), so every run reads the same crawl.
                record = writer.create_warc_record(
                    f"https://crawl.example/{n}",
                    "response",
                    payload=io.BytesIO(payload),
                    http_headers=headers,
                    warc_headers_dict={
                        "WARC-Record-ID": f"<urn:uuid:{uuid.UUID(int=n)}>",
                        "WARC-Date": "2024-10-01T00:00:00Z",
                    },
                )
                writer.write_record(record)
                size += len(payload)
                n += 1
        written, part = written + size, part + 1
    return written


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"`{' '.join(command)}` failed ({done.returncode}):\n{done.stdout[-5000:]}")
    return done.stdout, seconds


_STAGE = re.compile(r"^python -m olmo_assets\.defs\.stage (\S+)(.*?): done in ([\d.]+)s$", re.M)
_NUMBERS = re.compile(r"(\w+)=([\d.]+)")


def stage_reports(output: str) -> list[dict[str, Any]]:
    """Each stage command's summary: stage, arguments, seconds, its numbers."""
    reports = []
    for match in _STAGE.finditer(output):
        block = output[match.end() : output.find("\n\n", match.end())]
        numbers = {k: float(v) for k, v in _NUMBERS.findall(block.split("check ")[0])}
        reports.append(
            {"stage": match[1], "arguments": match[2].split(), "seconds": float(match[3])} | numbers
        )
    return reports


def _push_to_s3(repo: Path, env: dict[str, str]) -> tuple[float, bool]:
    """``dvc push`` of the whole cache to an S3-compatible remote (moto's server, started
    here on a free port): its seconds, and whether ``dvc status -c`` then finds it in sync."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        keys = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="bench")
        s3_env = env | keys
        _run(["dvc", "remote", "add", "-f", "--local", "s3", "s3://bench/cache"], repo, s3_env)
        _run(["dvc", "remote", "modify", "--local", "s3", "endpointurl", endpoint], repo, s3_env)
        _, seconds = _run(["dvc", "push", "-r", "s3"], repo, s3_env)
        status, _ = _run(["dvc", "status", "-c", "-r", "s3", "--json"], repo, s3_env)
        in_sync = json.loads(status.strip().splitlines()[-1] or "{}") == {}
        return seconds, in_sync
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=1.0, help="corpus text in GB (default 1)")
    parser.add_argument("--shard-mb", type=float, default=128.0, help="shard_mb of each source")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/olmo-corpus-scale"))
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"where the results go (default {RESULTS})"
    )
    args = parser.parse_args()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    data, repo = args.workdir / "data", args.workdir / "repo"
    target = int(args.gb * 1e9)
    started = time.perf_counter()
    paragraphs = _paragraphs()
    written = {
        "code": write_code(data / "code", int(target * SHARES["code"])),
        "web": write_web(data / "web", int(target * SHARES["web"]), paragraphs),
        "crawl": write_crawl(data / "crawl", int(target * SHARES["crawl"]), paragraphs),
    }
    print(
        f"corpus: {sum(written.values()) / 1e9:.2f} GB of text {written} in {time.perf_counter() - started:.0f}s",
        flush=True,
    )

    import yaml

    _copy_repository(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    shard_mb = args.shard_mb
    params["sources"] = {
        "code": {
            "kind": "code",
            "paths": [f"{data}/code/*.parquet"],
            "format": "parquet",
            "id_field": "hexsha",
            "text_field": "content",
            "metadata_fields": ["path"],
            "shard_mb": shard_mb,
        },
        "web": {"paths": [f"{data}/web/*.jsonl.gz"], "format": "dolma", "shard_mb": shard_mb},
        "crawl": {"paths": [f"{data}/crawl/*.warc.gz"], "format": "warc", "shard_mb": shard_mb},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for lock in ("dvc.lock", "sources/dvc.lock"):
        (repo / lock).unlink(missing_ok=True)
    remote = args.workdir / "dvc-remote"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "DAGSTER_PIPES"))}
    env |= {
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), str(REPO / ".venv-dvc" / "bin"), env["PATH"]]
        ),
        "DAGSTER_HOME": str(repo / ".dagster"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{args.workdir / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "OLMO_LAB_REPO": str(repo),
    }
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "corpus"],
    ):
        _run(command, repo, env)
    olmo = [sys.executable, "-m", "olmo_nn.cli.main"]
    shards_out, shards_s = _run([*olmo, "lab", "shards"], repo, env)
    print(shards_out.strip(), f"({shards_s:.1f}s)", flush=True)
    _run(["dvc", "remote", "add", "-f", "--local", "bench", str(remote)], repo, env)
    output, repro_s = _run(["dvc", "repro", "tokenize"], repo, env)
    (args.workdir / "repro.log").write_text(output)
    _, status_s = _run(["dvc", "status"], repo, env)
    _, push_s = _run(["dvc", "push", "-r", "bench"], repo, env)
    s3_push_s, s3_clean = _push_to_s3(repo, env)
    cache_bytes = sum(p.stat().st_size for p in (repo / ".dvc" / "cache").rglob("*") if p.is_file())
    reports = stage_reports(output)

    raw_bytes = sum(r.get("text_bytes", 0) for r in reports if r["stage"] == "source")
    by_kind: dict[str, dict[str, Any]] = {}
    for r in reports:
        kind = by_kind.setdefault(
            r["stage"], {"runs": 0, "seconds": 0.0, "peak_rss_mb": 0.0, "peak_rss_child_mb": 0.0}
        )
        kind["runs"] += 1
        kind["seconds"] += r["seconds"]
        for key in ("peak_rss_mb", "peak_rss_child_mb"):
            kind[key] = max(kind[key], r.get(key, 0.0))
    for kind in by_kind.values():
        kind["text_mb_per_s"] = (
            round(raw_bytes / 1e6 / kind["seconds"], 2) if kind["seconds"] else None
        )
        kind["seconds"] = round(kind["seconds"], 1)
    # Every source shard's tokenization.
    tokens = sum(r.get("tokens", 0) for r in reports if r["stage"] == "tokenize")
    accounting = json.loads((repo / "lab" / "curated" / "report.json").read_text())
    quarantined_raw = sum(r.get("quarantined", 0) for r in reports if r["stage"] == "source")
    result = {
        "command": "python benchmarks/corpus_scale.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "corpus_text_bytes": written,
        "raw_text_bytes": raw_bytes,
        "shards": {
            s: len(v)
            for s, v in yaml.safe_load((repo / "sources/shards.yaml").read_text())["files"].items()
        },
        "dvc_repro_seconds": round(repro_s, 1),
        "stages": by_kind,
        "tokens": tokens,
        "records": {
            s: {k: c[k] for k in ("input_records", "kept", "validation", "removed", "quarantined")}
            for s, c in accounting["sources"].items()
        },
        "quarantined_when_read": quarantined_raw,
        "dvc_status_seconds_after": round(status_s, 1),
        "dvc_push_local_seconds": round(push_s, 1),
        "dvc_cache_bytes": cache_bytes,
        "dvc_push_s3_seconds": round(s3_push_s, 1),
        "s3_remote_in_sync": s3_clean,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
