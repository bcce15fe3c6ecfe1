"""The datatrove peer of ``olmo data tag --taggers gopher,c4,pii``: its Gopher, C4 and PII steps.

    .venv-bench/bin/python benchmarks/peers/datatrove_filters.py INPUT_DIR OUTPUT_DIR [--processes 2]

What a datatrove user writes for these heuristics: a ``LocalPipelineExecutor`` (``--processes``
tasks on as many workers; each task reads its share of the files) running ``JsonlReader`` (the
``*.jsonl.gz`` Dolma documents) -> ``GopherRepetitionFilter`` -> ``GopherQualityFilter`` ->
``C4QualityFilter`` -> ``PIIFormatter`` -> ``JsonlWriter`` (the kept documents, gzipped), all
with their default settings. These are filters: a document one drops is not seen by the later
steps, and the PII step replaces emails and IPs in the kept documents, where a tagger measures
every document and writes attributes. English word splitting is datatrove's default, spaCy's
tokenizer. Logs go beside the output (``OUTPUT_DIR.logs``). Run by
``benchmarks/curation_throughput.py``.
"""

from __future__ import annotations

import argparse
import time

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import (
    C4QualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", help="folder of *.jsonl.gz Dolma documents")
    parser.add_argument("output", help="folder for the kept documents")
    parser.add_argument("--processes", type=int, default=2, help="tasks and workers")
    args = parser.parse_args()

    start = time.perf_counter()
    executor = LocalPipelineExecutor(
        pipeline=[
            JsonlReader(args.inputs, glob_pattern="*.jsonl.gz"),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            C4QualityFilter(),
            PIIFormatter(),
            JsonlWriter(args.output),
        ],
        tasks=args.processes,
        workers=args.processes,
        logging_dir=args.output.rstrip("/") + ".logs",
    )
    executor.run()
    print(f"datatrove pipeline: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
