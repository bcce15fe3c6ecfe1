"""Rebuild the committed sample token shards that ``configs/tiny.yaml`` trains on.

    .venv/bin/python scripts/make_sample_shards.py

Real text from local sources (standard-library code, Python docs, package READMEs,
multilingual samples; see ``olmo_assets.curation.local_sources``), tokenized with OLMo's
tokenizer by ``olmo data tokenize``. Every 20th document is held out for validation. The
READMEs depend on the installed packages, so a rebuild elsewhere may differ slightly; the
committed shards' manifests record their exact contents.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import tempfile
from pathlib import Path

from olmo_assets.curation.local_sources import (
    code_documents,
    markdown_documents,
    multilingual_documents,
    prose_documents,
)
from olmo_nn.data import tokenize_documents

OUT = Path(__file__).resolve().parents[1] / "data" / "sample"


def main() -> None:
    sources = {
        "code": code_documents(max_bytes=2_500_000),
        "prose": prose_documents(),
        "markdown": markdown_documents(),
        "multilingual": multilingual_documents(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        for split in ("train", "validation"):
            for name in sources:
                (raw / split / name).mkdir(parents=True)
        for name, documents in sources.items():
            with contextlib.ExitStack() as stack:
                files = {
                    split: stack.enter_context(
                        gzip.open(raw / split / name / "docs.jsonl.gz", "wt", encoding="utf-8")
                    )
                    for split in ("train", "validation")
                }
                for i, doc in enumerate(documents):
                    files["validation" if i % 20 == 19 else "train"].write(json.dumps(doc) + "\n")
        for split in ("train", "validation"):
            target = OUT / split
            shutil.rmtree(target, ignore_errors=True)
            summary = tokenize_documents([raw / split], target, workers=1)
            print(f"{split}: {summary}")


if __name__ == "__main__":
    main()
