"""Tokenization throughput: ``olmo data tokenize`` against a ``tokenizers`` script, same run.

    .venv/bin/python benchmarks/tokenizer_throughput.py [--code-mb 14] [--workers N] [--repeats 3]

The inputs are real text this machine has (``olmo_assets.curation.local_sources``: the
standard library's source as code, the Python documentation topics as prose, the installed
packages' descriptions as markdown, the committed multilingual samples), written once as Dolma
``documents/*.jsonl.gz`` (200 documents a file). Two measures, each side run ``--repeats``
times interleaved after one untimed warm-up (benchmarks/harness.py), the median kept:

* **whole command**: ``olmo data tokenize`` (``--workers N`` processes) against
  ``benchmarks/peers/tokenize_with_tokenizers.py`` run by ``.venv-bench/bin/python`` with
  ``RAYON_NUM_THREADS=N``: read the same files, ``Tokenizer.from_file`` on OLMo's shipped
  tokenizer.json, ``encode_batch`` (1,000 documents a call), EOS after each document, uint16
  arrays written. N is the number of CPUs by default. Both outputs' token streams are
  compared (recorded as ``tokens_identical``).
* **core call**, in this process on the same texts: our ``Tokenizer.encode_batch_arrays``
  (N threads) against ``tokenizers``' ``encode_batch`` and ``encode_batch_fast`` (N Rayon
  threads; the ids taken out as lists, as a caller needs them). Ids are checked identical
  first (recorded as ``ids_identical``).

Results: ``benchmarks/results/tokenizer_throughput.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from harness import ROOT, Side, compare, peer_python, row, versions, write_results

from olmo_assets.curation.local_sources import (
    code_documents,
    markdown_documents,
    multilingual_documents,
    prose_documents,
)
from olmo_nn.tokenizer import Tokenizer

TOKENIZER_JSON = ROOT / "olmo_nn" / "tokenizer" / "data" / "allenai_gpt-neox-olmo-dolma-v1_5.json"
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "tokenize_with_tokenizers.py"
DOCS_PER_FILE = 200


def _sources(code_mb: float) -> dict[str, list[dict[str, Any]]]:
    return {
        "code": list(code_documents(max_bytes=int(code_mb * 1e6))),
        "prose": list(prose_documents()),
        "markdown": list(markdown_documents()),
        "multilingual": list(multilingual_documents()),
    }


def write_corpus(folder: Path, sources: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """Dolma layout: ``documents/<source>-NNNN.jsonl.gz``, ``DOCS_PER_FILE`` documents a file."""
    documents = folder / "documents"
    documents.mkdir(parents=True)
    paths = []
    for name, docs in sources.items():
        for index in range(0, len(docs), DOCS_PER_FILE):
            path = documents / f"{name}-{index // DOCS_PER_FILE:04d}.jsonl.gz"
            with gzip.open(path, "wt", encoding="utf-8") as out:
                for doc in docs[index : index + DOCS_PER_FILE]:
                    record = {
                        "id": doc["id"],
                        "text": doc["text"],
                        "source": name,
                        "added": "2026-01-01T00:00:00.000Z",
                        "created": "2026-01-01T00:00:00.000Z",
                        "metadata": doc.get("metadata", {}),
                    }
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            paths.append(path)
    return paths


def _token_stream(folder: Path) -> Iterator[np.ndarray]:
    for path in sorted(folder.glob("part-*.npy")):
        yield np.fromfile(path, dtype="<u2")


def _same_tokens(ours: Path, peer: Path) -> bool:
    mine = np.concatenate(list(_token_stream(ours)) or [np.zeros(0, "<u2")])
    theirs = np.concatenate(list(_token_stream(peer)) or [np.zeros(0, "<u2")])
    return bool(mine.shape == theirs.shape and (mine == theirs).all())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--code-mb", type=float, default=14.0, help="MB of standard-library source (code)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes (ours) and Rayon threads (the peer) on each side (default: the CPUs)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    args = parser.parse_args(argv)
    # Read by the tokenizers library when its Rayon pool first starts (the core call below).
    os.environ["RAYON_NUM_THREADS"] = str(args.workers)
    bench_python = peer_python()
    olmo = Path(sys.executable).with_name("olmo")

    sources = _sources(args.code_mb)
    texts = [doc["text"] for docs in sources.values() for doc in docs]
    megabytes = sum(len(text.encode("utf-8")) for text in texts) / 1e6
    rows = []
    with tempfile.TemporaryDirectory(prefix="tokenizer-bench-") as tmp:
        work = Path(tmp)
        files = write_corpus(work / "corpus", sources)
        corpus = work / "corpus" / "documents"
        print(
            f"corpus: {megabytes:.1f} MB of text, {len(texts):,} documents in {len(files)} "
            f"files; {args.workers} processes (ours) / Rayon threads (peer) a side"
        )

        # ---------------------------------------------------------------- whole command
        ours_out, peer_out = work / "ours", work / "peer"
        ours_cmd = Side(
            "olmo data tokenize",
            argv=[str(olmo), "data", "tokenize", str(corpus), "-o", str(ours_out),
                  "--workers", str(args.workers), "--no-progress", "--overwrite"],
        )  # fmt: skip
        peer_cmd = Side(
            "tokenizers script",
            argv=[str(bench_python), str(PEER_SCRIPT), str(TOKENIZER_JSON), str(corpus),
                  str(peer_out), "--eos", "50279"],
            env={"RAYON_NUM_THREADS": str(args.workers), "TOKENIZERS_PARALLELISM": "true"},
        )  # fmt: skip
        fast_out = work / "peer_fast"
        fast_cmd = Side(
            "tokenizers script (encode_batch_fast)",
            argv=[*peer_cmd.argv[:-3], str(fast_out), "--eos", "50279", "--fast"],
            env=peer_cmd.env,
        )
        print("whole command:")
        compare([ours_cmd, peer_cmd, fast_cmd], repeats=args.repeats)
        num_tokens = sum(len(a) for a in _token_stream(ours_out))
        # The goal is on the stronger peer: the same script with tokenizers' faster call.
        for peer_side, out, goal in ((peer_cmd, peer_out, None), (fast_cmd, fast_out, 4.0)):
            rows.append(
                row(
                    work=f"tokenize {megabytes:.1f} MB of Dolma jsonl.gz (code, prose, "
                    "markdown, multilingual) into uint16 token files",
                    measure="whole command",
                    ours=ours_cmd,
                    peer=peer_side,
                    goal=goal,
                    unit_of_work=megabytes,
                    unit="MB/s",
                    extra={
                        "tokens_identical": _same_tokens(ours_out, out),
                        "num_tokens": num_tokens,
                        "processes_or_threads": args.workers,
                    },
                )
            )
        for folder in (ours_out, peer_out, fast_out):
            shutil.rmtree(folder, ignore_errors=True)

    # -------------------------------------------------------------------- core call
    ours = Tokenizer.from_name_or_path(TOKENIZER_JSON)
    ours.num_threads = args.workers
    peer = tokenizers.Tokenizer.from_file(str(TOKENIZER_JSON))
    our_ids = ours.encode_batch_arrays(texts)
    peer_ids = [e.ids for e in peer.encode_batch(texts, add_special_tokens=False)]
    fast_ids = [e.ids for e in peer.encode_batch_fast(texts, add_special_tokens=False)]
    identical = all(a.tolist() == b for a, b in zip(our_ids, peer_ids, strict=True))
    identical_fast = fast_ids == peer_ids
    del our_ids, peer_ids, fast_ids

    def run_ours() -> None:
        ours.encode_batch_arrays(texts)

    def run_peer() -> None:
        [e.ids for e in peer.encode_batch(texts, add_special_tokens=False)]

    def run_peer_fast() -> None:
        [e.ids for e in peer.encode_batch_fast(texts, add_special_tokens=False)]

    ours_core = Side("olmo Tokenizer", call=run_ours)
    peer_core = Side("tokenizers encode_batch", call=run_peer)
    fast_core = Side("tokenizers encode_batch_fast", call=run_peer_fast)
    print("core call:")
    compare([ours_core, peer_core, fast_core], repeats=args.repeats)
    work_text = f"encode the same {megabytes:.1f} MB of texts ({args.workers} threads a side)"
    for side, same in ((peer_core, identical), (fast_core, identical and identical_fast)):
        rows.append(
            row(
                work=work_text,
                measure="core call",
                ours=ours_core,
                peer=side,
                unit_of_work=megabytes,
                unit="MB/s",
                extra={"ids_identical": same, "engine": ours.engine},
            )
        )

    write_results(
        "tokenizer_throughput",
        rows=rows,
        inputs={
            "text_mb": round(megabytes, 2),
            "documents": {name: len(docs) for name, docs in sources.items()},
            "files": len(files),
            "layout": f"Dolma documents/*.jsonl.gz, {DOCS_PER_FILE} documents a file",
            "tokenizer": TOKENIZER_JSON.name,
            "processes_or_threads": args.workers,
            "repeats": args.repeats,
            "peer_script": str(PEER_SCRIPT.relative_to(ROOT)),
        },
        versions={
            "ours": versions(sys.executable, ["tiktoken", "tokenizers", "numpy"]),
            "bench": versions(bench_python, ["tokenizers", "numpy"]),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
