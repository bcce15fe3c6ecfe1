"""Tokenizer throughput: ours against transformers' fast tokenizer, side by side, one run.

    .venv/bin/python benchmarks/tokenizer_throughput.py [--code-mb 16] [--repeats 3]

The peer is the ``tokenizers`` library that transformers' ``PreTrainedTokenizerFast`` wraps,
called as ``encode_batch`` on all cores (its Rayon pool); ours is ``Tokenizer`` on its
tiktoken engine, on all cores too. Both tokenize the same real text (the standard library's
source, the Python docs, package READMEs, multilingual samples), ids are checked to be
identical, and each figure is the best of ``--repeats`` interleaved runs, so background noise
hurts both sides alike. Decoding is measured the same way.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import tokenizers

from olmo_assets.curation.local_sources import (
    code_documents,
    markdown_documents,
    multilingual_documents,
    prose_documents,
)
from olmo_nn.tokenizer import Tokenizer


def _best_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--code-mb", type=float, default=16.0, help="MB of stdlib source to include"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per measurement (best is kept)"
    )
    args = parser.parse_args()

    ours = Tokenizer.from_name_or_path()
    peer = tokenizers.Tokenizer.from_str(ours.json_text)
    corpora = {
        "code": [d["text"] for d in code_documents(max_bytes=int(args.code_mb * 1e6))],
        "prose": [d["text"] for d in prose_documents()],
        "markdown": [d["text"] for d in markdown_documents()],
        "multilingual": [d["text"] for d in multilingual_documents()],
    }
    corpora["all"] = [t for texts in corpora.values() for t in texts]
    # The multilingual sample is only ~20 KB, too little to time; repeated 50 times it is
    # measurable, though repetition favours the peer, which caches words it has seen.
    corpora["multiling x50"] = corpora["multilingual"] * 50
    print(f"cores: {os.cpu_count()}  engine: {ours.engine}  repeats: {args.repeats} (best kept)")
    header = f"{'corpus':<13}{'MB':>7}{'tokens':>11}  {'peer MB/s':>10}{'ours MB/s':>10}{'peer Mtok/s':>12}{'ours Mtok/s':>12}{'ratio':>7}  ids"
    print(header)
    print("-" * len(header))
    for name, texts in corpora.items():
        megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        peer_s = ours_s = float("inf")
        peer_ids: list[list[int]] = []
        our_arrays: list[Any] = []
        for _ in range(args.repeats):  # interleaved so both see the same background load
            t, peer_ids = _best_seconds(
                lambda texts=texts: [
                    e.ids for e in peer.encode_batch(texts, add_special_tokens=False)
                ],
                1,
            )
            peer_s = min(peer_s, t)
            t, our_arrays = _best_seconds(lambda texts=texts: ours.encode_batch_arrays(texts), 1)
            ours_s = min(ours_s, t)
        identical = all(a.tolist() == b for a, b in zip(our_arrays, peer_ids, strict=True))
        num_tokens = sum(map(len, peer_ids))
        print(
            f"{name:<13}{megabytes:>7.1f}{num_tokens:>11,}  {megabytes / peer_s:>10.2f}{megabytes / ours_s:>10.2f}"
            f"{num_tokens / peer_s / 1e6:>12.2f}{num_tokens / ours_s / 1e6:>12.2f}{peer_s / ours_s:>6.1f}x  "
            f"{'identical' if identical else 'DIFFERENT'}"
        )

    ids = peer_ids  # the "all" corpus
    peer_dec_s, peer_text = _best_seconds(
        lambda: peer.decode_batch(ids, skip_special_tokens=False), args.repeats
    )
    ours_dec_s, our_text = _best_seconds(lambda: ours.decode_batch(ids), args.repeats)
    num_tokens = sum(map(len, ids))
    print(
        f"\ndecode (all): peer {num_tokens / peer_dec_s / 1e6:.2f} Mtok/s, ours "
        f"{num_tokens / ours_dec_s / 1e6:.2f} Mtok/s, ratio {peer_dec_s / ours_dec_s:.1f}x, "
        f"{'identical' if peer_text == our_text else 'DIFFERENT'} text"
    )


if __name__ == "__main__":
    main()
