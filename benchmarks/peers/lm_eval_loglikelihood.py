"""The peer of our scorer's core call: lm-evaluation-harness's ``HFLM.loglikelihood``, in-process.

    .venv-bench/bin/python benchmarks/peers/lm_eval_loglikelihood.py HF_FOLDER REQUESTS.jsonl
        OUT.json [--batch-size 32]

Loads ``HFLM`` (``backend="causal"``, float32, CPU) from the local transformers folder, reads
the requests (one JSON object a line: ``context``, ``continuation``) as lm-eval
``loglikelihood`` instances, scores the first ``--batch-size`` of them once untimed (the first
forward pass of a fresh process pays one-time costs that our in-process side has already paid
in its warm-up), then times ``loglikelihood`` on all of them. Prints ``core seconds: S`` and
writes the per-request log-likelihoods to OUT.json. Run by ``benchmarks/eval_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="transformers model folder (tokenizer.json beside it)")
    parser.add_argument("requests", help="jsonl of {context, continuation}")
    parser.add_argument("output", help="json file for the log-likelihoods")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with open(args.requests, encoding="utf-8") as lines:
        pairs = [json.loads(line) for line in lines if line.strip()]
    lm = HFLM(
        pretrained=args.folder,
        backend="causal",
        device="cpu",
        batch_size=args.batch_size,
        dtype="float32",
    )
    instances = [
        Instance(
            request_type="loglikelihood",
            doc={},
            arguments=(pair["context"], pair["continuation"]),
            idx=i,
        )
        for i, pair in enumerate(pairs)
    ]
    lm.loglikelihood(instances[: args.batch_size], disable_tqdm=True)  # warm-up, untimed
    start = time.perf_counter()
    responses = lm.loglikelihood(instances, disable_tqdm=True)
    seconds = time.perf_counter() - start
    with open(args.output, "w", encoding="utf-8") as out:
        json.dump([float(logprob) for logprob, _ in responses], out)
    print(f"scored {len(instances)} requests")
    print(f"core seconds: {seconds:.4f}")


if __name__ == "__main__":
    main()
