"""Training throughput: our OLMo against transformers' ``OlmoForCausalLM``.

    .venv/bin/python benchmarks/train_throughput.py --cpu           # `make bench`: whole commands
    .venv/bin/python benchmarks/train_throughput.py                 # GPU: OLMo-1B shape, bf16
    .venv/bin/python benchmarks/train_throughput.py --small         # CPU-sized shape (tested)

``--cpu`` (benchmarks/harness.py; results in ``benchmarks/results/train_throughput.json``)
runs ``olmo train``, the whole command with its loader, callbacks and checkpoints, against
``benchmarks/peers/train_with_transformers.py``, a plain ``OlmoForCausalLM`` loop run by
``.venv-bench/bin/python``: fp32, same shape, init scale, batch, sequence length, steps and
token windows (one shard of real text, written once), at the ``tiny`` and ``olmo-60m``
shapes (``CPU_SHAPES``). Rows per shape: the whole commands, and the steady-state steps'
seconds from each side's own per-step log (its tokens/s, the first steps left out).

Without ``--cpu``, both models run in this process:

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
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from olmo_nn.model import OLMo, TransformerConfig, preset
from olmo_nn.parallel import apply_compile

_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
ROOT = Path(__file__).resolve().parents[1]


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
    cpu = parser.add_argument_group("--cpu mode (olmo train against a transformers loop)")
    cpu.add_argument("--cpu", action="store_true", help="the CPU benchmark `make bench` runs")
    cpu.add_argument(
        "--shapes", nargs="+", default=list(CPU_SHAPES), choices=list(CPU_SHAPES),
        help="shapes to run (default: all)",
    )  # fmt: skip
    cpu.add_argument("--repeats", type=int, default=3, help="timed runs per side and shape")
    cpu.add_argument("--shard-mb", type=float, default=2.0, help="MB of text in the shard")
    args = parser.parse_args(argv)
    if args.cpu:
        return cpu_main(args)
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


# ------------------------------------------------------------------------------ --cpu mode
# `olmo train` (the whole command: config, loader, callbacks, checkpoints) against a plain
# transformers OlmoForCausalLM loop (benchmarks/peers/train_with_transformers.py in
# .venv-bench), fp32 on the CPU, same shape, batch, sequence length, steps and token windows.
CPU_SHAPES: dict[str, dict[str, Any]] = {
    # configs/tiny.yaml's model (preset "tiny": d 128, 2 layers, 4 heads, MLP 512, tied) with
    # OLMo's padded vocabulary (50,304 rows: the output layer is most of its FLOPs).
    "tiny": {"preset": "tiny", "seq": 128, "batch": 4, "steps": 20, "warmup_steps": 5},
    # The OLMo ladder's 60M (preset "olmo-60m": d 384, 16 layers, 12 heads, MLP 1536, untied).
    "olmo-60m": {"preset": "olmo-60m", "seq": 128, "batch": 2, "steps": 6, "warmup_steps": 2},
}
"""Batch and sequence length are small so that `make bench` stays in its time budget on two
cores; both sides get the same ones."""
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "train_with_transformers.py"
LR_WARMUP_STEPS = 2


def _write_shard(folder: Path, megabytes: float) -> Path:
    """One token-shard folder of real text (prose, markdown, code), written once."""
    from olmo_assets.curation.local_sources import (
        code_documents,
        markdown_documents,
        prose_documents,
    )
    from olmo_nn.data.tokenize import tokenize_documents

    budget, total = int(megabytes * 1e6), 0
    documents = folder.with_name("documents.jsonl")
    with documents.open("w", encoding="utf-8") as out:
        for doc in [*prose_documents(), *markdown_documents(), *code_documents(max_bytes=budget)]:
            out.write(json.dumps({"id": doc["id"], "text": doc["text"]}) + "\n")
            total += len(doc["text"].encode("utf-8"))
            if total >= budget:
                break
    tokenize_documents([documents], folder, source="bench")
    return folder


def _steady(metrics: list[dict[str, Any]], warmup_steps: int, batch: int, seq: int) -> float:
    """Seconds of the steps after the first ``warmup_steps`` (from the logged tokens/s)."""
    return sum(batch * seq / m["tokens_per_s"] for m in metrics[warmup_steps:])


class _Harvest:
    """Before each run of a side: keep the last run's per-step log, then clear its folder."""

    def __init__(self, folder: Path, log_name: str) -> None:
        self.folder, self.log_name = folder, log_name
        self.logs: list[list[dict[str, Any]]] = []

    def __call__(self) -> None:
        # One entry per run, empty for a run that wrote no log (it failed): the last entries
        # stay aligned with the timed runs (the first call, before any run, adds an empty one).
        log = self.folder / self.log_name
        lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
        self.logs.append([json.loads(line) for line in lines if line.strip()])
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)


def _cpu_config(shape: dict[str, Any], shard: Path) -> tuple[TransformerConfig, dict[str, Any]]:
    config = preset(shape["preset"]).replace(
        vocab_size=50280, embedding_size=50304, eos_token_id=50279, pad_token_id=1,
        max_sequence_length=shape["seq"], init="normal", init_std=0.02,
    )  # fmt: skip
    with (ROOT / "configs" / "tiny.yaml").open(encoding="utf-8") as f:
        tree = yaml.safe_load(f)
    tree.update(
        run_name=f"bench-{shape['preset']}",
        model=config.to_dict(),
        global_batch_size=shape["batch"],
        micro_batch_size=shape["batch"],
        max_steps=shape["steps"],
        save_interval=10**6,
        save_interval_unsharded=None,
        log_interval=1,
        mlflow=False,
        device="cpu",
        precision="fp32",
    )
    tree["data"].update(paths=[str(shard)], sequence_length=shape["seq"], validation_paths=[])
    tree["eval"] = {"interval": 0}
    tree["scheduler"]["warmup_steps"] = LR_WARMUP_STEPS
    return config, tree


def cpu_main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from harness import Run, Side, compare, peer_python, row, versions, write_results

    bench_python = peer_python()
    olmo = Path(sys.executable).with_name("olmo")
    shapes = [name for name in CPU_SHAPES if name in args.shapes]
    rows: list[dict[str, Any]] = []
    inputs: dict[str, Any] = {"shapes": {}, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        shard = _write_shard(work / "shard", args.shard_mb)
        tokens_file = shard / "part-00000.npy"
        inputs["data"] = {"shard_tokens": int(tokens_file.stat().st_size // 2),
                          "text": "prose, markdown and code (olmo_assets local_sources)"}  # fmt: skip
        for name in shapes:
            shape = dict(CPU_SHAPES[name])
            if args.steps is not None:
                shape["steps"] = max(args.steps, shape["warmup_steps"] + 1)
            config, tree = _cpu_config(shape, shard)
            config_path = work / f"{name}.yaml"
            config_path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
            ours_dir, peer_dir = work / f"{name}-ours", work / f"{name}-peer"
            ours_harvest = _Harvest(ours_dir, "run/metrics.jsonl")
            peer_harvest = _Harvest(peer_dir, "metrics.jsonl")
            ours = Side(
                "olmo train",
                argv=[str(olmo), "train", str(config_path), "--run-dir", str(ours_dir / "run")],
                cwd=work,
                before=ours_harvest,
            )
            peer = Side(
                "transformers OlmoForCausalLM loop",
                argv=[
                    str(bench_python), str(PEER_SCRIPT), str(tokens_file),
                    "--d-model", str(config.d_model), "--n-heads", str(config.n_heads),
                    "--n-layers", str(config.n_layers), "--mlp-hidden", str(config.hidden_size),
                    "--vocab", str(config.vocab_size), "--embedding", str(config.padded_vocab_size),
                    *(["--tied"] if config.weight_tying else []),
                    "--init-std", str(config.init_std), "--seq", str(shape["seq"]),
                    "--batch", str(shape["batch"]), "--steps", str(shape["steps"]),
                    "--warmup-steps", str(shape["warmup_steps"]),
                    "--lr", str(tree["optim"]["lr"]), "--lr-warmup", str(LR_WARMUP_STEPS),
                    "--metrics", str(peer_dir / "metrics.jsonl"),
                    "--save", str(peer_dir / "final"),
                ],
                cwd=work,
                before=peer_harvest,
            )  # fmt: skip
            print(f"{name}: {_shape_text(config, shape)}")
            warm_up = name == "tiny"  # the first shape warms the page cache for the rest
            compare([ours, peer], repeats=args.repeats, warmup=warm_up)
            ours_harvest()
            peer_harvest()
            timed = slice(-len(ours.runs), None)
            rates = {}
            steady_sides = []
            for side, harvest in ((ours, ours_harvest), (peer, peer_harvest)):
                logs = harvest.logs[timed]
                steady = Side(f"{side.name} (steady-state steps)")
                for run, log in zip(side.runs, logs, strict=True):
                    ok = run.ok and len(log) == shape["steps"]
                    seconds = (
                        _steady(log, shape["warmup_steps"], shape["batch"], shape["seq"])
                        if ok
                        else 0.0
                    )
                    steady.runs.append(Run(seconds=seconds if ok else 0.0,
                                           returncode=0 if ok else 1,
                                           output_tail="" if ok else run.output_tail))  # fmt: skip
                steady_tokens = (shape["steps"] - shape["warmup_steps"]) * shape["batch"]
                steady_tokens *= shape["seq"]
                ok_runs = [r.seconds for r in steady.runs if r.ok]
                rates[side.name] = (
                    round(steady_tokens / statistics.median(ok_runs), 1) if ok_runs else None
                )
                steady_sides.append(steady)
            tokens_all = shape["steps"] * shape["batch"] * shape["seq"]
            shape_info = {
                "preset": shape["preset"], "d_model": config.d_model, "n_layers": config.n_layers,
                "n_heads": config.n_heads, "mlp_hidden": config.hidden_size,
                "vocab": config.vocab_size, "embedding_rows": config.padded_vocab_size,
                "weight_tying": config.weight_tying, "params": config.num_params(),
                "sequence_length": shape["seq"], "batch": shape["batch"],
                "steps": shape["steps"], "warmup_steps_excluded": shape["warmup_steps"],
                "untimed_warm_up_run": warm_up,
            }  # fmt: skip
            inputs["shapes"][name] = shape_info
            rows.append(
                row(
                    work=f"train {name} ({config.num_params() / 1e6:.0f}M params) "
                    f"{shape['steps']} steps of {shape['batch']}x{shape['seq']} tokens, fp32 CPU",
                    measure="whole command",
                    ours=ours,
                    peer=peer,
                    goal=1.0,
                    unit_of_work=tokens_all,
                    unit="tokens/s",
                    extra={"shape": shape_info},
                )
            )
            rows.append(
                row(
                    work=f"train {name}: steady-state steps {shape['warmup_steps'] + 1}-"
                    f"{shape['steps']}, tokens/s each side logged",
                    measure="core call",
                    ours=steady_sides[0],
                    peer=steady_sides[1],
                    goal=1.0,
                    unit_of_work=steady_tokens,
                    unit="tokens/s",
                    extra={
                        "ours_tokens_per_s": rates[ours.name],
                        "peer_tokens_per_s": rates[peer.name],
                        "shape": shape_info,
                    },
                )
            )
    inputs.update(
        precision="fp32",
        ours="olmo train CONFIG --run-dir DIR: configs/tiny.yaml with the shape, data and "
        "batch replaced, evaluation off, mlflow=false, log_interval=1; its metrics.jsonl, "
        "console line and loss plot on; a sharded and an unsharded checkpoint at the end",
        peer="benchmarks/peers/train_with_transformers.py: OlmoForCausalLM (sdpa), AdamW, "
        "cosine LR, clipping, the same shard's windows; saves model and optimizer at the end",
        repeats=args.repeats,
    )
    write_results(
        "train_throughput",
        rows=rows,
        inputs=inputs,
        versions={
            "ours": versions(sys.executable, ["torch", "numpy"]),
            "bench": versions(bench_python, ["torch", "transformers", "numpy"]),
        },
    )
    return rows


def _shape_text(config: TransformerConfig, shape: dict[str, Any]) -> str:
    return (
        f"d={config.d_model} layers={config.n_layers} heads={config.n_heads} "
        f"mlp={config.hidden_size} vocab rows={config.padded_vocab_size} "
        f"tied={config.weight_tying} ({config.num_params() / 1e6:.1f}M params); "
        f"batch {shape['batch']} x seq {shape['seq']}, {shape['steps']} steps "
        f"({shape['warmup_steps']} warm-up steps excluded from the steady state)"
    )


if __name__ == "__main__":
    main()
