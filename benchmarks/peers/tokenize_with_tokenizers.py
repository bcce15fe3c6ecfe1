"""The peer of ``olmo data tokenize``: the same whole job written with Hugging Face ``tokenizers``.

    .venv-bench/bin/python benchmarks/peers/tokenize_with_tokenizers.py TOKENIZER_JSON INPUT_DIR OUTPUT_DIR
        [--eos 50279] [--batch-size 1000]

What a user of ``tokenizers`` writes to turn a folder of Dolma ``*.jsonl.gz`` documents into
uint16 token arrays: read each file line by line, decode the JSON, encode the texts in batches
with ``Tokenizer.encode_batch`` (Rust, all cores through its Rayon pool: ``RAYON_NUM_THREADS``
sets their number, the default is every core), append EOS after each document, and write one
raw little-endian uint16 file per input file (``np.memmap``-readable, like OLMo's shards).
Prints the documents, tokens and seconds. Run by ``benchmarks/tokenizer_throughput.py``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import tokenizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tokenizer", help="tokenizer.json")
    parser.add_argument("inputs", help="folder of *.jsonl.gz Dolma documents (recursive)")
    parser.add_argument("output", help="folder for the .npy uint16 token files")
    parser.add_argument("--eos", type=int, default=50279, help="id appended after each document")
    parser.add_argument("--batch-size", type=int, default=1000, help="documents per encode_batch")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="encode_batch_fast (the same ids, no offsets computed): the faster call",
    )
    args = parser.parse_args()

    start = time.perf_counter()
    tokenizer = tokenizers.Tokenizer.from_file(args.tokenizer)
    encode = tokenizer.encode_batch_fast if args.fast else tokenizer.encode_batch
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    num_documents = num_tokens = 0
    eos = np.array([args.eos], dtype=np.uint16)
    for index, path in enumerate(sorted(Path(args.inputs).rglob("*.jsonl.gz"))):
        pieces: list[np.ndarray] = []
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            texts = [json.loads(line)["text"] for line in lines if line.strip()]
        for first in range(0, len(texts), args.batch_size):
            batch = texts[first : first + args.batch_size]
            for encoding in encode(batch, add_special_tokens=False):
                pieces.append(np.array(encoding.ids, dtype=np.uint16))
                pieces.append(eos)
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)
        tokens.astype("<u2", copy=False).tofile(output / f"part-{index:05d}.npy")
        num_documents += len(texts)
        num_tokens += len(tokens)
    seconds = time.perf_counter() - start
    print(f"tokenized {num_documents} documents into {num_tokens} tokens in {seconds:.2f} s")


if __name__ == "__main__":
    main()
