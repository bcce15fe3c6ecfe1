"""The peer of ``olmo train`` on a CPU: a plain transformers ``OlmoForCausalLM`` training loop.

    .venv-bench/bin/python benchmarks/peers/train_with_transformers.py TOKENS.npy \\
        --d-model 128 --n-heads 4 --n-layers 2 --mlp-hidden 512 --vocab 50280 --embedding 50304 \\
        [--tied] --seq 256 --batch 8 --steps 30 --warmup-steps 5 --metrics metrics.jsonl

What a transformers user writes: an ``OlmoConfig`` of the given shape (OLMo 1 block: non-affine
LayerNorm, SwiGLU, RoPE, no biases; weights N(0, ``--init-std``)), SDPA attention, fp32 on
the CPU with torch's default threads (all cores), ``torch.optim.AdamW`` with weight decay,
a linear-warmup cosine LR schedule, gradient clipping at 1.0. The data are fixed-length
windows of ``--seq`` tokens cut from the same raw uint16 token file the other side trains
on, in a seeded random order; each step feeds ``--batch`` windows, the model sees the first
``seq - 1`` tokens and the loss is the cross-entropy against the next token, as ``olmo
train`` computes it. The trained model and optimizer state are saved at the end, as a
training run does. One JSON line per step goes to ``--metrics`` (seconds and tokens/s,
counted as ``batch x seq`` per step like ``olmo train``), and the last line printed is the
mean tokens/s of the steps after ``--warmup-steps``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from transformers import OlmoConfig, OlmoForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tokens", help="raw little-endian uint16 token file")
    parser.add_argument("--d-model", type=int, required=True)
    parser.add_argument("--n-heads", type=int, required=True)
    parser.add_argument("--n-layers", type=int, required=True)
    parser.add_argument("--mlp-hidden", type=int, required=True)
    parser.add_argument("--vocab", type=int, required=True, help="vocabulary (the data's ids)")
    parser.add_argument("--embedding", type=int, required=True, help="embedding rows (padded)")
    parser.add_argument("--max-seq", type=int, default=None, help="RoPE positions (default: seq)")
    parser.add_argument("--tied", action="store_true", help="tie input and output embeddings")
    parser.add_argument("--init-std", type=float, default=0.02)
    parser.add_argument("--seq", type=int, required=True, help="tokens per window")
    parser.add_argument("--batch", type=int, required=True, help="windows per step")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the mean")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lr-warmup", type=int, default=20, help="LR warm-up steps")
    parser.add_argument("--seed", type=int, default=6198)
    parser.add_argument("--metrics", required=True, help="JSON lines, one per step")
    parser.add_argument("--save", default=None, help="folder for the final model and optimizer")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    config = OlmoConfig(
        vocab_size=args.embedding,
        hidden_size=args.d_model,
        intermediate_size=args.mlp_hidden,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_heads,
        max_position_embeddings=args.max_seq or args.seq,
        tie_word_embeddings=args.tied,
        attention_bias=False,
        initializer_range=args.init_std,
        pad_token_id=1,
        eos_token_id=50279,
        bos_token_id=None,
    )
    config._attn_implementation = "sdpa"
    model = OlmoForCausalLM(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-5,
    )

    def lr_factor(step: int) -> float:
        if step < args.lr_warmup:
            return (step + 1) / args.lr_warmup
        progress = (step - args.lr_warmup) / max(1, args.steps - args.lr_warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    tokens = np.memmap(args.tokens, dtype="<u2", mode="r")
    num_windows = len(tokens) // args.seq
    order = np.random.default_rng(args.seed).permutation(num_windows)
    rates = []
    with open(args.metrics, "w", encoding="utf-8") as log:
        for step in range(args.steps):
            start = time.perf_counter()
            picks = [order[(step * args.batch + i) % num_windows] for i in range(args.batch)]
            batch = torch.from_numpy(
                np.stack([tokens[w * args.seq : (w + 1) * args.seq] for w in picks]).astype(
                    np.int64
                )
            )
            logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            seconds = time.perf_counter() - start
            rate = args.batch * args.seq / seconds
            if step >= args.warmup_steps:
                rates.append(rate)
            record = {"step": step + 1, "loss": loss_value, "grad_norm": float(grad_norm),
                      "seconds": seconds, "tokens_per_s": rate}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
    if args.save:
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    mean = sum(rates) / len(rates) if rates else float("nan")
    print(f"steady-state tokens/s: {mean:.1f} (steps {args.warmup_steps + 1}-{args.steps})")


if __name__ == "__main__":
    main()
