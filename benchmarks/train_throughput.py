"""Training throughput: our OLMo against transformers' ``OlmoForCausalLM``, same process.

    .venv/bin/python benchmarks/train_throughput.py                 # GPU: OLMo-1B shape, bf16
    .venv/bin/python benchmarks/train_throughput.py --small         # CPU-sized shape (tested)

Both models get the same shape, the same random token batches, bf16 autocast on GPU (fp32 on
CPU), fused AdamW where the device supports it, and are run eager and compiled (ours: each
block compiled; transformers: the whole model). After ``--warmup`` steps, ``--steps`` steps
are timed. Printed per row: tokens/s, MFU and peak memory. MFU counts 6·N + 12·layers·d·seq
training FLOPs per token (N: matmul parameters; PaLM, Chowdhery et al. 2022, arXiv:2204.02311,
appendix B) against the card's dense (no sparsity) bf16 tensor-core peak from NVIDIA's
datasheets: 989 TFLOP/s for the H100 SXM and the H200 (their 1,979 is with sparsity), 312 for
the A100.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from olmo_nn.model import OLMo, TransformerConfig, preset
from olmo_nn.parallel import apply_compile

_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _hf_model(config: TransformerConfig) -> torch.nn.Module:
    from transformers import OlmoConfig, OlmoForCausalLM

    hf_config = OlmoConfig(
        vocab_size=config.padded_vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.hidden_size,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        max_position_embeddings=config.max_sequence_length,
        tie_word_embeddings=config.weight_tying,
        attention_bias=False,
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        bos_token_id=None,
    )
    hf_config._attn_implementation = "sdpa"
    return OlmoForCausalLM(hf_config)


def _loss_ours(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def _loss_hf(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())


def measure(
    name: str,
    build: Callable[[], torch.nn.Module],
    loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    *,
    config: TransformerConfig,
    args: argparse.Namespace,
    device: torch.device,
    compile_fn: Callable[[torch.nn.Module], torch.nn.Module] | None,
) -> dict[str, Any]:
    _release(device)
    torch.manual_seed(0)
    model = build().to(device)
    if compile_fn is not None:
        model = compile_fn(model)
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=fused)
    bf16 = device.type == "cuda"
    generator = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(
            0, config.vocab_size, (args.micro_batch, args.seq + 1), generator=generator
        ).to(device)
        for _ in range(4)
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, batches[i % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tokens_per_s = args.steps * args.micro_batch * args.seq / seconds
    peak = (
        next((v for k, v in _PEAKS.items() if k in torch.cuda.get_device_name(device)), None)
        if device.type == "cuda"
        else None
    )
    mfu = tokens_per_s * config.num_flops_per_token(args.seq) / peak if peak else None
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"name": name, "tokens_per_s": tokens_per_s, "mfu": mfu, "memory_gib": memory}


def _release(device: torch.device) -> None:
    """Free the previous row's model before the next one is built."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="a small shape that runs on a CPU")
    parser.add_argument(
        "--seq", type=int, default=None, help="sequence length (default 2048; 64 with --small)"
    )
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="instances per step (default 4; 2 with --small)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 20; 2 with --small)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 5; 1 with --small)"
    )
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    if args.small:
        config = TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128,
                                   vocab_size=1000, embedding_size=1024, max_sequence_length=64,
                                   eos_token_id=0, pad_token_id=1, weight_tying=True)  # fmt: skip
        defaults = {"seq": 64, "micro_batch": 2, "steps": 2, "warmup": 1}
    else:
        config = preset("olmo-1b")
        defaults = {"seq": 2048, "micro_batch": 4, "steps": 20, "warmup": 5}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    def ours() -> torch.nn.Module:
        return OLMo(config)

    def hf() -> torch.nn.Module:
        return _hf_model(config)

    def compile_hf(model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model)  # type: ignore[return-value]

    rows = [
        measure(
            "transformers eager",
            hf,
            _loss_hf,
            config=config,
            args=args,
            device=device,
            compile_fn=None,
        ),
        measure(
            "ours eager", ours, _loss_ours, config=config, args=args, device=device, compile_fn=None
        ),
    ]
    if not args.no_compile:
        rows.append(
            measure(
                "transformers compiled",
                hf,
                _loss_hf,
                config=config,
                args=args,
                device=device,
                compile_fn=compile_hf,
            )
        )
        rows.append(
            measure(
                "ours compiled",
                ours,
                _loss_ours,
                config=config,
                args=args,
                device=device,
                compile_fn=apply_compile,
            )
        )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; shape d={config.d_model} layers={config.n_layers} seq={args.seq} "
          f"micro-batch={args.micro_batch}; {args.steps} timed steps after {args.warmup}")  # fmt: skip
    print(f"{'model':<24}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}")
    for row in rows:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        memory = f"{row['memory_gib']:.1f}" if row["memory_gib"] is not None else "-"
        print(f"{row['name']:<24}{row['tokens_per_s']:>12,.0f}{mfu:>8}{memory:>10}")
    by_name = {row["name"]: row["tokens_per_s"] for row in rows}
    if "ours compiled" in by_name:
        print(
            f"ours compiled / transformers compiled: {by_name['ours compiled'] / by_name['transformers compiled']:.2f}x"
        )
    return rows


if __name__ == "__main__":
    main()
