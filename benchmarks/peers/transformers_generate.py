"""The peer of our generation's core call: transformers' ``generate``, greedy, in-process.

    .venv-bench/bin/python benchmarks/peers/transformers_generate.py HF_FOLDER BATCHES.json
        OUT.json --max-new-tokens N --vocab V

Loads ``AutoModelForCausalLM`` (float32, CPU) from the local transformers folder and reads the
batches (a JSON list of batches, each a list of token-id prompts: the batches our ``generate``
makes, longest prompts first). Each batch is left-padded with its attention mask and given to
``generate`` (``do_sample=False``, ``max_new_tokens``, no EOS, the output rows at and past the
tokenizer's ``V`` ids suppressed, as our argmax runs over the tokenizer's ids). The first
batch is generated once untimed (a fresh process's first forward pays one-time costs that our
in-process side paid in its warm-up); then every batch is timed. Prints ``core seconds: S``
and writes each prompt's new tokens (in the batches' order) to OUT.json. Run by
``benchmarks/eval_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="transformers model folder")
    parser.add_argument("batches", help="json: a list of batches of token-id prompts")
    parser.add_argument("output", help="json file for the new tokens of each prompt")
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--vocab", type=int, required=True, help="the tokenizer's ids")
    parser.add_argument("--pad-token-id", type=int, default=1)
    args = parser.parse_args()

    with open(args.batches, encoding="utf-8") as source:
        batches: list[list[list[int]]] = json.load(source)
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32).eval()
    rows = model.get_output_embeddings().weight.shape[0]
    suppress = list(range(args.vocab, rows))

    def run(batch: list[list[int]]) -> list[list[int]]:
        longest = max(len(prompt) for prompt in batch)
        ids = torch.full((len(batch), longest), args.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, longest - len(prompt) :] = torch.tensor(prompt)
            mask[row, longest - len(prompt) :] = 1
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=args.pad_token_id,
                suppress_tokens=suppress or None,
            )
        return out[:, longest:].tolist()

    run(batches[0])  # warm-up, untimed
    start = time.perf_counter()
    generated = [tokens for batch in batches for tokens in run(batch)]
    seconds = time.perf_counter() - start
    with open(args.output, "w", encoding="utf-8") as out:
        json.dump(generated, out)
    print(f"generated {sum(len(t) for t in generated)} tokens for {len(generated)} prompts")
    print(f"core seconds: {seconds:.6f}")


if __name__ == "__main__":
    main()
