"""`make demo`: what the lab can do so far, end to end, on embedded defaults.

1. Assemble a small real corpus from local sources (standard-library code, Python docs,
   package READMEs, multilingual samples) as Dolma-format ``jsonl.gz``, one folder per source.
2. Curate it (``olmo data curate``: language ID, Gopher, C4, PII, dedup, mixing, every
   document accounted for) into OLMo token shards, and report on it (``olmo data report``).
3. Train the ``tiny`` model on those shards for a short run (``olmo train configs/tiny.yaml``
   with overrides): loss falling, metrics.jsonl, loss.png, MLflow, checkpoints; then
   reconstruct one training batch down to its documents (``olmo batch``).
4. Export the trained model to Hugging Face format (``olmo export-hf``), load it with
   transformers, and compare logits; import it back (``olmo import-hf``) and compare weights.

Every step runs the same command a person would type; the summary table ends the run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from olmo_assets.curation.local_sources import (
    code_documents,
    markdown_documents,
    multilingual_documents,
    prose_documents,
)

# The console script a person would type; ``python -m`` where it is not on this interpreter.
_SCRIPT = Path(sys.executable).parent / "olmo"
OLMO = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "olmo_nn.cli.main"]


def run(step: str, args: list[str]) -> float:
    print(f"\n$ olmo {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([*OLMO, *args], check=True)
    seconds = time.perf_counter() - start
    print(f"[{step}: {seconds:.1f}s]")
    return seconds


def write_corpus(raw: Path, code_mb: float) -> dict[str, tuple[int, int]]:
    sources = {
        "code": code_documents(max_bytes=int(code_mb * 1e6)),
        "prose": prose_documents(),
        "markdown": markdown_documents(),
        "multilingual": multilingual_documents(),
    }
    counts = {}
    for name, documents in sources.items():
        folder = raw / name
        folder.mkdir(parents=True, exist_ok=True)
        num_docs = num_bytes = 0
        with gzip.open(folder / "part-0000.jsonl.gz", "wt", encoding="utf-8") as out:
            for doc in documents:
                out.write(json.dumps(doc, ensure_ascii=False) + "\n")
                num_docs += 1
                num_bytes += len(doc["text"].encode("utf-8"))
        counts[name] = (num_docs, num_bytes)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output", type=Path, default=Path("demo_out"), help="scratch folder (recreated)"
    )
    parser.add_argument("--code-mb", type=float, default=4.0, help="MB of standard-library source")
    parser.add_argument("--steps", type=int, default=60, help="training steps of the tiny model")
    args = parser.parse_args()
    out: Path = args.output
    if out.exists():
        shutil.rmtree(out)
    timings: dict[str, float] = {}

    print("== 1. corpus from local sources")
    start = time.perf_counter()
    corpus = write_corpus(out / "raw", args.code_mb)
    timings["corpus"] = time.perf_counter() - start
    for name, (docs, size) in corpus.items():
        print(f"  {name:<13}{docs:>6} documents {size / 1e6:>7.2f} MB")

    print("\n== 2. curation (Dolma v1.5's web chain; code heuristics for code) and token shards")
    from olmo_assets.curation.config import SourceConfig
    from olmo_assets.curation.mixes import code_source, dolma_v1_5_config

    mix = dolma_v1_5_config().replace(
        sources=[
            code_source("code", [str(out / "raw" / "code")]),
            *(SourceConfig(name=name, paths=[str(out / "raw" / name)], validation_fraction=0.05)
              for name in ("prose", "markdown", "multilingual")),
        ],
    )  # fmt: skip
    (out / "mix.yaml").write_text(mix.to_yaml(), encoding="utf-8")
    curated = out / "curated"
    timings["curate"] = run(
        "curate",
        [
            "data",
            "curate",
            "--config",
            str(out / "mix.yaml"),
            "--output",
            str(curated),
            "--tokenize",
        ],
    )
    timings["report"] = run("report", ["data", "report", str(curated), "--top", "5"])

    print("\n== 3. training the tiny model")
    run_dir = out / "runs" / "tiny"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(out / 'mlflow.db').resolve()}")
    overrides = [
        f"data.paths=[{curated / 'shards'}]",
        f"max_steps={args.steps}",
        "save_interval=20",
        f"save_interval_unsharded={args.steps}",
        "eval.interval=20",
    ]
    timings["train"] = run(
        "train", ["train", "configs/tiny.yaml", *overrides, "--run-dir", str(run_dir)]
    )
    timings["batch"] = run(
        "batch", ["batch", str(run_dir), "--step", str(args.steps), "--limit", "3"]
    )
    import olmo_nn
    from olmo_nn.train.callbacks.metrics_file import read_metrics

    metrics = read_metrics(run_dir)
    checkpoint = run_dir / "checkpoints" / f"step{args.steps:06d}-unsharded"
    model = olmo_nn.load_model(checkpoint)
    from olmo_nn.data import InstanceDataset, TokenShards

    shards = TokenShards(curated / "shards")
    instances = InstanceDataset(shards, sequence_length=model.config.max_sequence_length)
    batch = torch.stack([torch.as_tensor(instances[i].astype("int64")) for i in range(8)])
    with torch.no_grad():
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten()).item()
    first, last = metrics[0]["loss"], metrics[-1]["loss"]
    print(f"  loss {first:.3f} -> {last:.3f} over {len(metrics)} steps "
          f"(ln vocab = {math.log(model.config.vocab_size):.3f}); plot: {run_dir / 'loss.png'}")  # fmt: skip

    print("\n== 4. Hugging Face round trip")
    hf_dir = out / "hf" / "tiny"
    timings["export-hf"] = run("export-hf", ["export-hf", str(checkpoint), str(hf_dir)])
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        hf_logits = hf_model(batch[:, :-1]).logits
    max_diff = (hf_logits - logits).abs().max().item()
    print(
        f"  transformers loaded {type(hf_model).__name__}; max |logit difference| = {max_diff:.2e}"
    )
    reimported = out / "checkpoints" / "tiny-reimported"
    timings["import-hf"] = run("import-hf", ["import-hf", str(hf_dir), str(reimported)])
    again = olmo_nn.load_model(reimported)
    identical = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )

    print("\n== summary")
    report = json.loads((curated / "report.json").read_text())
    rows = [
        ("raw documents", f"{sum(c['input_records'] for c in report['sources'].values()):,}"),
        (
            "kept after curation",
            f"{shards.num_documents:,} (accounting adds up: {report['accounting_ok']})",
        ),
        ("tokens", f"{shards.num_tokens:,}"),
        ("training instances", f"{len(instances):,} x {model.config.max_sequence_length}"),
        ("model parameters", f"{model.num_params():,}"),
        ("training loss", f"{first:.3f} -> {last:.3f} ({len(metrics)} steps)"),
        ("loss on 8 instances", f"{loss:.3f}"),
        ("HF logits max diff", f"{max_diff:.2e}"),
        ("HF round trip", "bit-identical" if identical else "DIFFERENT"),
        *((f"time: {k}", f"{v:.1f}s") for k, v in timings.items()),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(
        f"\nOutputs in {out}/: raw/, curated/ (documents, attributes, removed, quarantine, shards,"
    )
    print("  report/), runs/tiny/, checkpoints/, hf/, mlflow.db")
    print(f"Look at the loss curve: {run_dir / 'loss.png'}")
    if max_diff > 1e-4 or not identical:
        sys.exit("the Hugging Face round trip did not reproduce the model")


if __name__ == "__main__":
    main()
