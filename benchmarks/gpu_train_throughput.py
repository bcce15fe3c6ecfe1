"""GPU training throughput: ``olmo train`` at the OLMo-1B shape against transformers' Olmo.

    python benchmarks/gpu_train_throughput.py            # one CUDA GPU (benchmarks/gpu_check.sh)
    python benchmarks/gpu_train_throughput.py --small    # the same code paths on a CPU, fp32

On one GPU, each row in a process of its own with its own time limit (a row that fails or
runs out of time is reported as such and the others still run), in the order of
:data:`ROWS` (the goal's two rows first), then the search:

* ``olmo train`` compiled (``compile=true``) and eager: the whole command, on a token shard of
  random ids written at start, with ``configs/olmo-1b.yaml``'s model and precision (bf16,
  ``fsdp=true``: FSDP2 on one rank), sequence length 2048, no accumulation, evaluation and
  MLflow off, ``--stop-at`` the last step (one sharded checkpoint at the end, no unsharded
  one). Its tokens/s and MFU are the trainer's own (``metrics.jsonl``), over the steps after
  the first ``--warmup`` (compilation happens there); peak memory is
  ``torch.cuda.max_memory_allocated`` of that process.
* transformers' ``OlmoForCausalLM`` (SDPA attention) compiled (``torch.compile`` of the
  whole model) and eager, the same shape, batch, sequence length and steps, bf16 autocast, fused
  AdamW, clipping (``train_throughput.measure``: a plain loop over batches already on the GPU).
* the largest model that trains on the card with activation checkpointing: the OLMo-7B width
  (d 4096, 32 heads, MLP 11008) with a varying number of layers, bf16, FSDP, micro-batch 1,
  sequence 2048; each try is two optimizer steps of the trainer's own ``train_step``
  (``Trainer``; no checkpoint) in its own process; out-of-memory means it does not fit. A
  bisection over the layer count, starting near what 16 bytes a parameter (fp32 weights,
  gradients and two Adam moments) allows, within ``--search-seconds``.

Printed: a row per run (tokens/s, MFU, peak GiB), the ratio ``olmo train`` compiled over
transformers compiled (goal: at least 1.15) and the MFU goal (50%, against 989 TFLOP/s dense
bf16 for the H100 and H200). On a GPU the figures go to
``benchmarks/results/gpu_train_throughput.json`` (``harness.write_results``) and, with
``--json``, to another file too. ``--small`` runs a tiny model in fp32 on the CPU through the
same processes (figures not written): a check of this script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from olmo_nn.model import TransformerConfig, preset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, train_throughput

SPEED_GOAL = 1.15
"""``olmo train`` compiled over transformers compiled, on the same GPU in the same run."""
MFU_GOAL = 0.5
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
"""Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, as the trainer's."""
BYTES_PER_PARAM = 16
"""fp32 weights, fp32 gradients and AdamW's two fp32 moments (FSDP's bf16 copies are transient)."""
SEARCH_WIDTH = "olmo-7b"
"""The preset whose width the largest-model search keeps while it varies the layer count."""
OOM_EXIT = 3
"""A fit try's exit status when the model does not fit in the GPU's memory."""
ROWS = ("olmo train compiled", "transformers compiled", "olmo train eager", "transformers eager")
"""The rows in the order they run: the goal's two first, so that a lack of time costs the
least telling ones."""


def small_config() -> TransformerConfig:
    """The ``--small`` model: tiny, with OLMo's vocabulary (the shard's ids)."""
    return TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128,
                             max_sequence_length=64, weight_tying=True)  # fmt: skip


def write_random_shard(folder: Path, *, num_tokens: int, vocab_size: int, eos: int) -> Path:
    """A token-shard folder of uniformly random ids (documents of 4,096 tokens), seed 0."""
    import numpy as np

    from olmo_nn.data.shards import ShardWriter

    generator = np.random.default_rng(0)
    with ShardWriter(folder, vocab_size=vocab_size, eos_token_id=eos) as writer:
        for i in range(max(1, num_tokens // 4096)):
            ids = generator.integers(0, eos, size=4095, dtype=np.int64)
            writer.write(ids, id=f"random-{i}", source="random")
    return folder


def train_tree(args: argparse.Namespace, shard: Path, config: TransformerConfig) -> dict[str, Any]:
    """``configs/olmo-1b.yaml`` with the benchmark's data, batch, steps and settings."""
    with (ROOT / "configs" / "olmo-1b.yaml").open(encoding="utf-8") as f:
        tree = yaml.safe_load(f)
    tree.update(
        run_name="gpu-bench",
        model=config.to_dict(),
        global_batch_size=args.micro_batch,
        micro_batch_size=args.micro_batch,
        max_steps=args.warmup + args.steps,
        save_interval=10**6,
        save_interval_unsharded=None,
        log_interval=args.warmup,
        mlflow=False,
        device=args.device,
        precision=args.precision,
        fsdp=True,
    )
    tree["data"].update(paths=[str(shard)], sequence_length=args.seq, validation_paths=[])
    tree["data"]["num_workers"] = 0
    tree["eval"] = {"interval": 0}
    tree["scheduler"]["warmup_steps"] = 2  # the 1B schedule's 2,000 exceed the run
    return tree


def steady_rates(records: list[dict[str, Any]], warmup: int) -> tuple[float | None, float | None]:
    """tokens/s and MFU over the logged records after step ``warmup``.

    Each record's rate covers the same number of tokens per step, so the aggregate over the
    steps is the harmonic mean of the per-record rates weighted by the steps each covers.
    """
    timed = [r for r in records if r.get("step", 0) > warmup and r.get("tokens_per_s")]
    if not timed:
        return None, None
    steps, seconds_per_token, previous = 0, 0.0, warmup
    for record in timed:
        covered = record["step"] - previous
        previous = record["step"]
        steps += covered
        seconds_per_token += covered / record["tokens_per_s"]
    rate = steps / seconds_per_token
    last = timed[-1]
    mfu = last["mfu"] / last["tokens_per_s"] * rate if last.get("mfu") is not None else None
    return rate, mfu


# ------------------------------------------------------------------ the rows' processes
def _child(argv: list[str], timeout: float, log: Path) -> tuple[int, str]:
    """Run ``argv``; its output goes to ``log`` and, as it comes, to our stdout."""
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        assert process.stdout is not None
        deadline = time.monotonic() + timeout

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                print(f"    | {line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if process.poll() is None:
            process.kill()
            process.wait()
            reader.join(timeout=5)
            return 124, f"timed out after {timeout:.0f} s"
        reader.join(timeout=5)
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
    return process.returncode, "\n".join(tail)


def olmo_train_row(
    name: str, args: argparse.Namespace, shard: Path, work: Path, *, compile: bool, timeout: float
) -> dict[str, Any]:
    config = small_config() if args.small else preset("olmo-1b")
    tree = train_tree(args, shard, config)
    tree["compile"] = compile
    config_path = work / f"{name.replace(' ', '-')}.yaml"
    run_dir = work / f"run-{name.replace(' ', '-')}"
    peak_file = work / f"peak-{name.replace(' ', '-')}.json"
    # max_steps one more than the steps run, and --stop-at the last: the run ends with one
    # sharded checkpoint and no unsharded one (at 1B they are ~14 and ~5 GB, written after
    # the timed steps).
    last = args.warmup + args.steps
    tree["max_steps"] = last + 1
    config_path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    argv = [sys.executable, __file__, "--child-olmo-train", str(peak_file), "--",
            "train", str(config_path), "--run-dir", str(run_dir), "--stop-at", str(last)]  # fmt: skip
    started = time.monotonic()
    code, tail = _child(argv, timeout, work / f"{name.replace(' ', '-')}.log")
    row: dict[str, Any] = {"name": name, "command": "olmo " + " ".join(argv[5:]),
                           "wall_s": round(time.monotonic() - started, 1), "returncode": code}  # fmt: skip
    from olmo_nn.train.callbacks.metrics_file import read_metrics

    records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    rate, mfu = steady_rates(records, args.warmup)
    if code != 0 or rate is None:
        row["error"] = tail or "no metrics after the warm-up steps"
    row.update(tokens_per_s=rate, mfu=mfu, losses=[r.get("loss") for r in records])
    if peak_file.is_file():
        row["memory_gib"] = json.loads(peak_file.read_text())["peak_allocated_gib"]
    shutil.rmtree(run_dir, ignore_errors=True)  # its checkpoint: ~14 GB at 1B
    return row


def transformers_row(
    name: str, args: argparse.Namespace, work: Path, *, compile: bool, timeout: float
) -> dict[str, Any]:
    out = work / f"{name.replace(' ', '-')}.json"
    argv = [sys.executable, __file__, "--child-transformers", str(out),
            *(["--compile"] if compile else []), *_shape_flags(args)]  # fmt: skip
    started = time.monotonic()
    code, tail = _child(argv, timeout, work / f"{name.replace(' ', '-')}.log")
    row: dict[str, Any] = {"name": name, "wall_s": round(time.monotonic() - started, 1),
                           "returncode": code, "tokens_per_s": None, "mfu": None}  # fmt: skip
    if code == 0 and out.is_file():
        measured = json.loads(out.read_text())
        row.update(tokens_per_s=measured["tokens_per_s"], mfu=measured["mfu"],
                   memory_gib=measured["memory_gib"])  # fmt: skip
    else:
        row["error"] = tail
    return row


def _shape_flags(args: argparse.Namespace) -> list[str]:
    return [*(["--small"] if args.small else []), "--seq", str(args.seq),
            "--micro-batch", str(args.micro_batch), "--steps", str(args.steps),
            "--warmup", str(args.warmup)]  # fmt: skip


def run_transformers(args: argparse.Namespace, out: Path) -> None:
    """One transformers row in this process (``--child-transformers``)."""
    import train_throughput

    config = small_config() if args.small else preset("olmo-1b")
    device = torch.device(args.device)

    def compile_whole(model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model)  # type: ignore[return-value]

    row = train_throughput.measure(
        "transformers", lambda: train_throughput._hf_model(config), train_throughput._loss_hf,
        config=config, args=args, device=device,
        compile_fn=compile_whole if args.compile else None,
    )  # fmt: skip
    out.write_text(json.dumps(row))


def run_olmo_train(peak_file: Path, olmo_argv: list[str]) -> int:
    """``olmo train`` in this process, then its peak GPU memory (``--child-olmo-train``)."""
    from olmo_nn.cli.main import main

    code = main(olmo_argv)
    allocated = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    peak_file.write_text(json.dumps({"peak_allocated_gib": allocated / 2**30 or None}))
    return code


# ------------------------------------------------------------------ the largest model
def search_config(n_layers: int, small: bool) -> TransformerConfig:
    base = small_config() if small else preset(SEARCH_WIDTH)
    return base.replace(n_layers=n_layers)


def fit_once(args: argparse.Namespace, n_layers: int, shard: Path, out: Path) -> int:
    """Two optimizer steps of the trainer's ``train_step`` with activation checkpointing at
    ``n_layers`` (``--child-fit``); exit :data:`OOM_EXIT` when it runs out of GPU memory."""
    import torch.distributed as dist

    from olmo_nn.train.config import TrainConfig
    from olmo_nn.train.loader import BatchLoader
    from olmo_nn.train.trainer import Trainer

    config = search_config(n_layers, args.small)
    tree = train_tree(args, shard, config)
    tree.update(micro_batch_size=1, global_batch_size=1, max_steps=4, log_interval=1,
                activation_checkpointing=True)  # fmt: skip
    tree["scheduler"]["warmup_steps"] = 1
    train_config = TrainConfig.from_dict(tree).resolved()
    result: dict[str, Any] = {"n_layers": n_layers, "params": config.num_params()}
    try:
        with tempfile.TemporaryDirectory(prefix="fit-") as run_dir:
            trainer = Trainer(train_config, Path(run_dir), callbacks=[])
            loader = BatchLoader(trainer.data, trainer.order, batch_size_at=trainer.schedule.size,
                                 micro_batch_size=1, stop_step=2)  # fmt: skip
            for batch in loader:
                metrics = trainer.train_step(batch)
            loss = metrics.get("loss")
            result["loss"] = None if loss is None else float(loss)
    except (torch.OutOfMemoryError, RuntimeError) as error:
        # A collective or the caching allocator may report it as a plain RuntimeError.
        if not isinstance(error, torch.OutOfMemoryError) and "out of memory" not in str(error):
            raise
        result.update(fits=False, error=str(error).splitlines()[0])
    else:
        result["fits"] = True
    if torch.cuda.is_available():
        result["memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if dist.is_initialized():
        dist.destroy_process_group()
    out.write_text(json.dumps(result))
    print(json.dumps(result))
    return 0 if result["fits"] else OOM_EXIT


def largest_model(
    args: argparse.Namespace,
    shard: Path,
    work: Path,
    *,
    seconds: float,
    progress: Callable[[dict[str, Any]], None] = lambda search: None,
) -> dict[str, Any]:
    """Bisect the layer count at the search width; each try in its own process, ``progress``
    called with the search so far after each."""
    if args.small:
        card_bytes, tries_allowed = 2 * 2**20 * BYTES_PER_PARAM, 2  # "fits" 2 layers' estimate
    else:
        card_bytes, tries_allowed = torch.cuda.get_device_properties(0).total_memory, 6
    base = search_config(1, args.small)
    per_layer = search_config(2, args.small).num_params() - base.num_params()
    fixed = base.num_params() - per_layer
    estimate = max(1, int((card_bytes / BYTES_PER_PARAM - fixed) / per_layer))
    fits, fails = 0, None
    tries: list[dict[str, Any]] = []
    guess = max(1, int(estimate * 0.9))
    deadline = time.monotonic() + seconds
    while len(tries) < tries_allowed and (fails is None or fails - fits > 1):
        left = deadline - time.monotonic()
        if left < 20 and not args.small:
            break
        out = work / f"fit-{guess}.json"
        argv = [sys.executable, __file__, "--child-fit", str(guess), str(out),
                *_shape_flags(args)]  # fmt: skip
        print(f"  try {guess} layers ({search_config(guess, args.small).num_params() / 1e9:.2f}B "
              f"params)", flush=True)  # fmt: skip
        code, tail = _child(argv, max(left, 5), work / f"fit-{guess}.log")
        found = json.loads(out.read_text()) if out.is_file() else None
        if found is None:
            tries.append({"n_layers": guess, "fits": None, "returncode": code, "error": tail})
            break  # neither fit nor out of memory: a failure, not an answer
        tries.append(found)
        if found["fits"]:
            fits = guess
            guess = max(guess + 1, int(estimate * 1.05)) if fails is None else (fits + fails) // 2
        else:
            fails = guess
            guess = (fits + fails) // 2 if fits else max(1, guess // 2)
        progress(_search_result(args, estimate, tries, fits, fails))
        if guess in (fits, fails) or guess < 1:
            break
    return _search_result(args, estimate, tries, fits, fails)


def _search_result(
    args: argparse.Namespace, estimate: int, tries: list[dict[str, Any]], fits: int,
    fails: int | None,
) -> dict[str, Any]:  # fmt: skip
    best = next((t for t in tries if t.get("fits") and t["n_layers"] == fits), None)
    return {"width": SEARCH_WIDTH if not args.small else "small", "estimate_layers": estimate,
            "largest": best, "smallest_not_fitting_layers": fails, "tries": list(tries)}  # fmt: skip


# ------------------------------------------------------------------ report
def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


RATIOS = (("olmo train compiled", "transformers compiled"), ("olmo train eager", "transformers eager"),
          ("olmo train eager", "transformers compiled"))  # fmt: skip


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios of the rows that ran (ours over the peer's tokens/s) and our compiled MFU."""
    by_name = {row["name"]: row for row in rows}
    summary: dict[str, Any] = {}
    for ours, theirs in RATIOS:
        a, b = by_name.get(ours, {}), by_name.get(theirs, {})
        if a.get("tokens_per_s") and b.get("tokens_per_s"):
            summary[f"{ours} / {theirs}"] = round(a["tokens_per_s"] / b["tokens_per_s"], 3)
    mfu = by_name.get("olmo train compiled", {}).get("mfu")
    if mfu is not None:
        summary["mfu_olmo_train_compiled"] = round(mfu, 4)
    return summary


def print_table(rows: list[dict[str, Any]], search: dict[str, Any] | None) -> dict[str, Any]:
    print(f"\n{'row':<26}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}  note")
    for row in rows:
        rate = f"{row['tokens_per_s']:,.0f}" if row.get("tokens_per_s") else "-"
        mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
        memory = f"{row['memory_gib']:.1f}" if row.get("memory_gib") else "-"
        note = "" if not row.get("error") else f"FAILED (exit {row['returncode']})"
        print(f"{row['name']:<26}{rate:>12}{mfu:>8}{memory:>10}  {note}")
    summary = summarize(rows)
    for ours, theirs in RATIOS:
        ratio = summary.get(f"{ours} / {theirs}")
        if ratio is None:
            print(f"ratio {ours} / {theirs}: - (a row failed or did not run)")
            continue
        goal = ""
        if (ours, theirs) == RATIOS[0]:
            goal = f" (goal >= {SPEED_GOAL}: {'met' if ratio >= SPEED_GOAL else 'NOT met'})"
        print(f"ratio {ours} / {theirs}: {ratio:.2f}{goal}")
    best = summary.get("mfu_olmo_train_compiled")
    if best is not None:
        verdict = "met" if best >= MFU_GOAL else "NOT met"
        print(f"MFU olmo train compiled: {best:.1%} (goal >= {MFU_GOAL:.0%}: {verdict})")
    if search is not None:
        largest = search.get("largest")
        if largest:
            fails = search["smallest_not_fitting_layers"]
            above = f"{fails} layers did not fit" if fails else "no larger count was tried"
            print(f"largest model with activation checkpointing: {largest['n_layers']} layers "
                  f"at {search['width']}'s width, {largest['params'] / 1e9:.2f}B params, "
                  f"peak {largest.get('memory_gib') or 0:.1f} GiB ({above})")  # fmt: skip
        else:
            failed = [t for t in search["tries"] if t.get("fits") is None]
            reason = f"a try failed: {failed[0]['error'][-300:]}" if failed else "none fitted"
            print(f"largest model with activation checkpointing: none found ({reason})")
    return summary


def result_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The results file's rows (``harness.row``): ``olmo train`` compiled against transformers
    compiled (the goal) and eager against eager, each side's time the timed steps' tokens over
    its tokens/s."""
    from harness import Run, Side, row

    tokens = args.steps * args.micro_batch * args.seq
    by_name = {r["name"]: r for r in rows}

    def side(name: str) -> Side:
        found = by_name.get(name, {})
        rate = found.get("tokens_per_s")
        run = Run(seconds=tokens / rate) if rate else Run(seconds=0.0, returncode=1,
                                                          output_tail=found.get("error", "not run"))  # fmt: skip
        return Side(name, argv=found["command"].split() if "command" in found else None,
                    runs=[run])  # fmt: skip

    out_rows = []
    for ours, theirs, goal in (("olmo train compiled", "transformers compiled", SPEED_GOAL),
                               ("olmo train eager", "transformers eager", None)):  # fmt: skip
        a, b = by_name.get(ours, {}), by_name.get(theirs, {})
        out_rows.append(row(
            work=f"train OLMo-1B bf16 1 GPU {args.micro_batch}x{args.seq}, steps after "
            f"{args.warmup}: {ours}", measure="core call", ours=side(ours), peer=side(theirs),
            goal=goal, unit_of_work=tokens, unit="tokens/s",
            extra={"ours_tokens_per_s": a.get("tokens_per_s"), "peer_tokens_per_s": b.get("tokens_per_s"),
                   "ours_mfu": a.get("mfu"), "peer_mfu": b.get("mfu"),
                   "ours_peak_gib": a.get("memory_gib"), "peer_peak_gib": b.get("memory_gib"),
                   "mfu_goal": MFU_GOAL if goal else None,
                   "mfu_met": (a.get("mfu") or 0) >= MFU_GOAL if goal else None},
        ))  # fmt: skip
    return out_rows


def write_gpu_results(
    args: argparse.Namespace, rows: list[dict[str, Any]], search: dict[str, Any] | None
) -> None:
    from harness import versions, write_results

    device = torch.cuda.get_device_name(0)
    write_results(
        "gpu_train_throughput", rows=result_rows(rows, args),
        inputs={"device": device, "peak_flops": _peak(torch.device("cuda")), "shape": "olmo-1b",
                "sequence_length": args.seq, "micro_batch": args.micro_batch,
                "timed_steps": args.steps, "warmup_steps": args.warmup, "precision": "bf16",
                "ours": "olmo train (configs/olmo-1b.yaml, fsdp=true, one rank), its metrics.jsonl",
                "peer": "transformers OlmoForCausalLM (sdpa), bf16 autocast, fused AdamW, clipping",
                "all_rows": rows},
        versions={"ours": versions(sys.executable, ["torch", "transformers", "numpy"])},
        extra={"largest_model_with_activation_checkpointing": search},
    )  # fmt: skip


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="tiny fp32 model on the CPU")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (2048; 64 small)")
    parser.add_argument("--micro-batch", type=int, default=None, help="instances a step (4; 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (10; 2 small)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (5; 1)")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    parser.add_argument("--no-search", action="store_true", help="skip the largest-model search")
    parser.add_argument(
        "--rows", nargs="+", choices=[r.replace(" ", "-") for r in ROWS],
        default=[r.replace(" ", "-") for r in ROWS], help="rows to run (default: all four)",
    )  # fmt: skip
    parser.add_argument(
        "--row-seconds", type=float, default=150, help="time limit of a compiled row"
    )
    parser.add_argument(
        "--eager-row-seconds", type=float, default=90, help="time limit of an eager row"
    )
    parser.add_argument(
        "--total-seconds",
        type=float,
        default=300,
        help="time for everything; the search gets the rest",
    )
    parser.add_argument("--search-seconds", type=float, default=120, help="at most this to search")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    child = parser.add_mutually_exclusive_group()
    child.add_argument("--child-olmo-train", type=Path, help=argparse.SUPPRESS)
    child.add_argument("--child-transformers", type=Path, help=argparse.SUPPRESS)
    child.add_argument("--child-fit", nargs=2, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child_olmo_train is not None:
        sys.exit(run_olmo_train(args.child_olmo_train, [a for a in rest if a != "--"]))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if not args.small and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --small for the CPU check")
    defaults = ({"seq": 64, "micro_batch": 2, "steps": 2, "warmup": 1} if args.small
                else {"seq": 2048, "micro_batch": 4, "steps": 10, "warmup": 5})  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = "cpu" if args.small else "cuda"
    args.precision = "fp32" if args.small else "bf16"
    deadline = time.monotonic() + args.total_seconds
    if args.child_transformers is not None:
        run_transformers(args, args.child_transformers)
        return {}
    with tempfile.TemporaryDirectory(prefix="gpu-bench-", dir=_work_root(args.small)) as tmp:
        work = Path(tmp)
        config = small_config() if args.small else preset("olmo-1b")
        shard_tokens = (args.warmup + args.steps + 1) * args.micro_batch * (args.seq + 1) * 2
        shard = write_random_shard(work / "shard", num_tokens=max(shard_tokens, 65536),
                                   vocab_size=config.vocab_size, eos=config.eos_token_id)  # fmt: skip
        if args.child_fit is not None:
            sys.exit(fit_once(args, int(args.child_fit[0]), shard, Path(args.child_fit[1])))
        name = torch.cuda.get_device_name(0) if not args.small else "CPU (--small)"
        print(f"device: {name}; model {'small' if args.small else 'olmo-1b'} "
              f"({config.num_params() / 1e9:.3f}B params); micro-batch {args.micro_batch} x "
              f"seq {args.seq}; {args.steps} timed steps after {args.warmup}; work in {work}",
              flush=True)  # fmt: skip
        rows: list[dict[str, Any]] = []
        search: dict[str, Any] | None = None

        def save(partial: dict[str, Any] | None = None) -> None:
            """The report so far, so that a run stopped from outside leaves its figures."""
            if args.json is not None:
                report = {"device": name, "rows": rows, "largest_model": partial or search,
                          "summary": summarize(rows)}  # fmt: skip
                args.json.write_text(json.dumps(report, indent=2) + "\n")

        for row_name in ROWS:
            compiled = row_name.endswith("compiled")
            if (compiled and args.no_compile) or row_name.replace(" ", "-") not in args.rows:
                continue
            left = deadline - time.monotonic()
            if left < 10:
                rows.append({"name": row_name, "returncode": None, "tokens_per_s": None,
                             "mfu": None, "error": "not run: out of time"})  # fmt: skip
                continue
            timeout = min(args.row_seconds if compiled else args.eager_row_seconds, left)
            print(f"== {row_name} (at most {timeout:.0f} s)", flush=True)
            if row_name.startswith("olmo train"):
                found = olmo_train_row(row_name, args, shard, work, compile=compiled,
                                       timeout=timeout)  # fmt: skip
            else:
                found = transformers_row(row_name, args, work, compile=compiled, timeout=timeout)
            rows.append(found)
            save()
            shown = {k: v for k, v in found.items() if k not in ("error", "losses")}
            print(f"== {row_name}: {json.dumps(shown)}", flush=True)
        if not args.no_search:
            seconds = min(args.search_seconds, deadline - time.monotonic())
            print(f"== largest model with activation checkpointing (at most {seconds:.0f} s)",
                  flush=True)  # fmt: skip
            search = largest_model(args, shard, work, seconds=seconds, progress=save)
        save()
        summary = print_table(rows, search)
    report = {"device": name, "rows": rows, "largest_model": search, "summary": summary}
    if not args.small:
        write_gpu_results(args, rows, search)
    return report


def _work_root(small: bool) -> str | None:
    """Where run folders go: 1B's checkpoints are ~14 GB, so the roomiest of /dev/shm and the
    temporary folder (``GPU_BENCH_WORK`` overrides)."""
    if os.environ.get("GPU_BENCH_WORK"):
        return os.environ["GPU_BENCH_WORK"]
    if small:
        return None
    candidates = [p for p in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(p)]
    return max(candidates, key=lambda p: shutil.disk_usage(p).free, default=None)


if __name__ == "__main__":
    main()
