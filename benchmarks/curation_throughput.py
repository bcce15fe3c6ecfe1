"""Curation chain throughput and peak memory on a real corpus of at least 50 MB.

    .venv/bin/python benchmarks/curation_throughput.py [--mb 60] [--workers 2]

The corpus is real text this machine has: the standard library's and the installed
packages' Python sources (code), their documentation files (.md, .rst, .txt: web-like
prose), the Python documentation topics and the multilingual samples, written as Dolma
jsonl.gz. The whole Dolma v1.5 web chain runs on all of it, code included (language ID, Gopher, C4,
PII, URL / exact / paragraph dedup, mixing with span replacement; ``--code-rules`` gives the
code source code heuristics instead); the script prints MB/s of input text and the
peak RSS of the main process and of any worker.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olmo_assets.curation.config import SourceConfig
from olmo_assets.curation.local_sources import multilingual_documents, prose_documents
from olmo_assets.curation.mixes import code_source, dolma_v1_5_config
from olmo_assets.curation.pipeline import curate


def _files(suffixes: tuple[str, ...]) -> Iterator[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in suffixes and path.is_file():
                yield path


def _documents(suffixes: tuple[str, ...], source: str, limit: int) -> Iterator[dict[str, Any]]:
    total = 0
    for path in _files(suffixes):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text.strip() or len(text) > 2_000_000:
            continue
        total += len(text.encode("utf-8"))
        yield {"id": str(path), "text": text, "source": source, "metadata": {"path": str(path)}}
        if total >= limit:
            return


def build_corpus(folder: Path, megabytes: float) -> int:
    """Write the corpus (docs and prose first, code fills up to the size); returns text bytes."""
    budget = int(megabytes * 1e6)
    total = 0
    for name in ("prose", "docs", "code"):
        if name == "prose":
            documents: Iterator[dict[str, Any]] = iter(
                [*prose_documents(), *multilingual_documents()]
            )
        elif name == "docs":
            documents = _documents((".md", ".rst", ".txt"), "docs", budget // 2)
        else:
            documents = _documents((".py",), "code", budget - total)
        (folder / name).mkdir(parents=True)
        with gzip.open(folder / name / "part-0.jsonl.gz", "wt", encoding="utf-8") as out:
            for doc in documents:
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                total += len(doc["text"].encode("utf-8"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mb", type=float, default=60.0, help="corpus size in MB of text (>= 50 for the issue)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="tagging processes (0: one per core)"
    )
    parser.add_argument(
        "--code-rules",
        action="store_true",
        help="give the code source code heuristics instead of the web chain",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        size = build_corpus(raw, args.mb)
        config = dolma_v1_5_config().replace(
            sources=[
                code_source("code", [str(raw / "code")])
                if args.code_rules
                else SourceConfig(name="code", paths=[str(raw / "code")]),
                SourceConfig(name="docs", paths=[str(raw / "docs")]),
                SourceConfig(name="prose", paths=[str(raw / "prose")]),
            ],
            workers=args.workers,
        )
        start = time.perf_counter()
        summary = curate(config, Path(tmp) / "out", progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        report = summary.to_dict()
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"corpus: {size / 1e6:.1f} MB of text in {sum(s['input_records'] for s in report['sources'].values()):,} records"
    )
    print(f"chain:  {config.taggers} + dedup {config.dedup.to_dict()} + {len(config.rules)} rules")
    print(f"time:   {seconds:.1f} s  ->  {size / 1e6 / seconds:.2f} MB/s")
    print(f"peak RSS: main {main_rss:.0f} MiB, largest worker {child_rss:.0f} MiB")
    for name, counts in report["sources"].items():
        print(f"  {name}: kept {counts['kept']}, removed {counts['removed']} {counts['removed_by_stage']}, "
              f"quarantined {counts['quarantined']}, accounting ok: {counts['accounting_ok']}")  # fmt: skip


if __name__ == "__main__":
    main()
