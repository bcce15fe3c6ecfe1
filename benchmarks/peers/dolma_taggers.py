"""The peer of our taggers' core call: Dolma's tagger classes called in-process.

    .venv-dolma/bin/python benchmarks/peers/dolma_taggers.py DOCUMENTS.jsonl [--taggers ...]

Loads the documents (one JSON object per line: ``id``, ``text``, ``source``) into Dolma
``Document`` objects, builds the taggers from Dolma's registry (default ``gopher_v1 c4_v1
pii_regex_v1``), then times only the tagging: each tagger's ``predict`` on every document, in
one process, as ``dolma tag``'s workers call it. Prints the documents, the spans found and
``core seconds: S``. Run by ``benchmarks/curation_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import time

from dolma.core.data_types import Document
from dolma.core.registry import TaggerRegistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("documents", help="jsonl file of documents")
    parser.add_argument("--taggers", nargs="+", default=["gopher_v1", "c4_v1", "pii_regex_v1"])
    args = parser.parse_args()

    with open(args.documents, encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    docs = [Document(source=r["source"], id=r["id"], text=r["text"]) for r in records]
    taggers = [TaggerRegistry.get(name)() for name in args.taggers]

    start = time.perf_counter()
    spans = 0
    for tagger in taggers:
        for doc in docs:
            spans += len(tagger.predict(doc).spans)
    seconds = time.perf_counter() - start
    print(f"tagged {len(docs)} documents with {', '.join(args.taggers)}: {spans} spans")
    print(f"core seconds: {seconds:.4f}")


if __name__ == "__main__":
    main()
