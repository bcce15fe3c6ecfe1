"""Log-likelihood throughput: our scorer against lm-evaluation-harness's HF backend, one run.

    .venv/bin/python benchmarks/eval_throughput.py [--num-requests 300] [--batch-size 32] [--small]
        [--device cpu|cuda] [--dtype float32|bfloat16]

Both sides load the same random ``OlmoForCausalLM`` from one local folder (an ``OLMo``
checkpoint exported with ``export_hf``, OLMo's tokenizer beside it), in float32 on the CPU by
default, and score the same (context, continuation) pairs taken from our ``arc_easy`` task
(every choice of the first questions). Ours is ``score_requests`` with the ``"joint"``
convention, which is lm-eval's tokenization, and prefix sharing (each question's context runs
once for all its choices); theirs is ``HFLM.loglikelihood``. Ours without prefix sharing (one
row per request) is timed too, for reference. Each side runs once to warm up, then twice more,
interleaved, and the best time is kept. The script also reports the largest per-request
log-likelihood difference, which should stay below 1e-4 in float32.

lm-eval is a benchmark-only dependency: without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Nothing here may reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.eval.models import load_language_model
from olmo_nn.eval.scoring import Request, score_requests
from olmo_nn.eval.tasks import load_task
from olmo_nn.hf import export_hf
from olmo_nn.model import OLMo, TransformerConfig

TASK = "arc_easy"
TOLERANCE = 1e-4
NUM_TIMED_RUNS = 2
MODEL_CONFIG = TransformerConfig(d_model=256, n_heads=4, n_layers=4)
"""The full run's model: OLMo's tokenizer vocabulary (50304 padded rows)."""
SMALL_MODEL_CONFIG = TransformerConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128)
NUM_REQUESTS = 300
SMALL_NUM_REQUESTS = 40


def build_hf_folder(config: TransformerConfig, folder: Path, *, seed: int = 0) -> Path:
    """A random ``OLMo`` of ``config``, saved as a checkpoint and exported for transformers."""
    torch.manual_seed(seed)
    model = OLMo(config)
    model.init_weights(seed=seed)
    checkpoint = save_checkpoint(model, folder / "checkpoint")
    return export_hf(checkpoint, folder / "hf", dtype="float32")


def task_requests(num_requests: int) -> list[Request]:
    """The first ``num_requests`` (context, continuation) pairs of our ``arc_easy`` task."""
    requests: list[Request] = []
    # ARC has about four choices per question; ask for enough questions to fill the quota.
    for instance in load_task(TASK, limit=num_requests // 3 + 1):
        requests.extend(Request(c, x) for c, x in instance.pairs)
    if len(requests) < num_requests:
        raise ValueError(f"num_requests={num_requests}: {TASK} gave only {len(requests)} requests")
    return requests[:num_requests]


def _best_seconds(
    runs: dict[str, Callable[[], list[float]]],
) -> dict[str, tuple[float, list[float]]]:
    """Warm each side up, then time it ``NUM_TIMED_RUNS`` times, interleaved; keep the best."""
    for run in runs.values():
        run()
    best: dict[str, tuple[float, list[float]]] = {name: (float("inf"), []) for name in runs}
    for _ in range(NUM_TIMED_RUNS):
        for name, run in runs.items():
            start = time.perf_counter()
            logprobs = run()
            seconds = time.perf_counter() - start
            if seconds < best[name][0]:
                best[name] = (seconds, logprobs)
    return best


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the comparison and print it; returns the figures (empty if lm-eval is missing)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--num-requests",
        type=int,
        default=None,
        help=f"(context, continuation) pairs from {TASK} (default 300, or {SMALL_NUM_REQUESTS} "
        "with --small)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="requests per forward pass, on both sides"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for both sides")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="weights and compute, both sides (the 1e-4 agreement holds in float32 only)",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="a tiny model and fewer requests: a smoke test in seconds",
    )
    args = parser.parse_args(argv)
    num_requests = args.num_requests
    if num_requests is None:
        num_requests = SMALL_NUM_REQUESTS if args.small else NUM_REQUESTS
    if num_requests < 1 or args.batch_size < 1:
        raise ValueError("--num-requests and --batch-size must be positive")

    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        print(
            f"lm-evaluation-harness is not importable ({error}); it is a benchmark-only "
            "dependency: `pip install lm-eval accelerate` to run this comparison"
        )
        return {}

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = SMALL_MODEL_CONFIG if args.small else MODEL_CONFIG
    requests = task_requests(num_requests)

    with tempfile.TemporaryDirectory(prefix="eval_throughput_") as tmp:
        folder = build_hf_folder(config, Path(tmp))
        ours = load_language_model(
            f"hf:{folder}", device=args.device, dtype=getattr(torch, args.dtype)
        )
        theirs = HFLM(
            pretrained=str(folder),
            backend="causal",
            device=args.device,
            batch_size=args.batch_size,
            dtype=args.dtype,
        )
        lm_eval_instances = [
            Instance(
                request_type="loglikelihood",
                doc={},
                arguments=(request.context, request.continuation),
                idx=i,
            )
            for i, request in enumerate(requests)
        ]

        def run_ours(*, share_prefix: bool = True) -> list[float]:
            scores = score_requests(
                ours,
                requests,
                convention="joint",
                batch_size=args.batch_size,
                share_prefix=share_prefix,
            )
            return [score.logprob_sum for score in scores]

        def run_ours_unshared() -> list[float]:
            return run_ours(share_prefix=False)

        def run_theirs() -> list[float]:
            responses = theirs.loglikelihood(lm_eval_instances, disable_tqdm=True)
            return [float(logprob) for logprob, _ in responses]

        best = _best_seconds(
            {"ours": run_ours, "ours_unshared": run_ours_unshared, "lm_eval": run_theirs}
        )

    seconds = {name: time_and_logprobs[0] for name, time_and_logprobs in best.items()}
    their_logprobs = best["lm_eval"][1]
    deltas = {
        name: [abs(a - b) for a, b in zip(best[name][1], their_logprobs, strict=True)]
        for name in ("ours", "ours_unshared")
    }
    figures = {
        "num_requests": len(requests),
        "batch_size": args.batch_size,
        "model": f"d_model={config.d_model} n_layers={config.n_layers} n_heads={config.n_heads}",
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "ours_requests_per_s": len(requests) / seconds["ours"],
        "ours_unshared_requests_per_s": len(requests) / seconds["ours_unshared"],
        "lm_eval_requests_per_s": len(requests) / seconds["lm_eval"],
        "speedup": seconds["lm_eval"] / seconds["ours"],
        "logprobs": {name: logprobs for name, (_, logprobs) in best.items()},
        "max_abs_logprob_diff": max(deltas["ours"]),
        "max_abs_logprob_diff_unshared": max(deltas["ours_unshared"]),
        "worst_request": deltas["ours"].index(max(deltas["ours"])),
    }
    print(f"model:                 OlmoForCausalLM {figures['model']}, {args.dtype}, {args.device}")
    print(
        f"requests:              {figures['num_requests']} ({TASK}), batch size {args.batch_size}"
    )
    print(f"threads:               {figures['threads']}")
    print(f"ours req/s:            {figures['ours_requests_per_s']:.1f} (prefix sharing)")
    print(f"ours unshared req/s:   {figures['ours_unshared_requests_per_s']:.1f} (one row each)")
    print(f"lm-eval HFLM req/s:    {figures['lm_eval_requests_per_s']:.1f}")
    print(f"ratio (ours/lm-eval):  {figures['speedup']:.2f}x")
    worst = max(figures["max_abs_logprob_diff"], figures["max_abs_logprob_diff_unshared"])
    verdict = "ok" if worst <= TOLERANCE else f"ABOVE {TOLERANCE:g}"
    if args.dtype != "float32":
        verdict += f"; the {TOLERANCE:g} bound is for float32"
    print(
        f"max |d logprob|:       {figures['max_abs_logprob_diff']:.2e} shared, "
        f"{figures['max_abs_logprob_diff_unshared']:.2e} unshared ({verdict})"
    )
    return figures


if __name__ == "__main__":
    main()
