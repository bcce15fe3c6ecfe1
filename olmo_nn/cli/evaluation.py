"""``olmo eval``: downstream tasks (rank classification) and Paloma-style perplexity."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add ``olmo eval downstream`` and ``olmo eval perplexity``."""
    parser = commands.add_parser("eval", help="evaluate a checkpoint or a Hugging Face model")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    downstream = verbs.add_parser(
        "downstream",
        help="multiple-choice tasks (cloze or lettered), zero- or few-shot, MMLU, suites; "
        "generative tasks (nq_open, triviaqa, basic_arithmetic)",
        description=(
            "Score every choice's log-likelihood (context and continuation tokenized separately, "
            "as Catwalk does; --convention joint for lm-evaluation-harness's) and report accuracy "
            "under the normalizations asked for; `acc` is each task's OLMo default (`none` for "
            "the lettered :mc format). MMLU subjects also get MMLU's averages (mmlu, "
            "mmlu_<category>), and each suite named in --tasks its score (the mean of its "
            "tasks' acc, MMLU once, the better format where both were scored). Generative "
            "tasks (nq_open, 5-shot by default with OLMES's curated shots; triviaqa and "
            "basic_arithmetic, 0-shot) generate greedily with a KV cache up to the task's stop "
            "strings and report exact_match (and, SQuAD-normalized, f1)."
        ),
    )
    downstream.add_argument("--model", required=True, help="checkpoint folder, or hf:PATH")
    downstream.add_argument(
        "--tasks",
        default="core9",
        help="comma-separated tasks (arc_easy, mmlu_anatomy, nq_open, ...), suites (core9, mmlu, "
        "olmo1, olmes) or task YAML paths; a :rc or :mc suffix picks the format (arc_easy:mc)",
    )
    downstream.add_argument(
        "--format",
        choices=("rc", "mc", "both"),
        default=None,
        help="format of the tasks named without a suffix: rc (rank the answer texts, the "
        "default), mc (lettered options, scored as the letters) or both (each task with a "
        "lettered format twice: name:rc and name:mc)",
    )
    downstream.add_argument(
        "--num-shots",
        type=int,
        default=None,
        help="shots before each prompt, never from the evaluated split: MMLU's first K of its "
        "dev split; OLMES's curated shots (K <= 5) for arc_*, commonsense_qa and social_iqa "
        "(both formats) and openbookqa, piqa, winogrande (:mc); an error for other tasks "
        "(the wheel ships only their evaluated split). Default: each task's own (5 for MMLU, "
        "0 elsewhere)",
    )
    downstream.add_argument(
        "--limit", type=int, default=1000, help="examples per task (OLMo: 1000, seed 1234)"
    )
    downstream.add_argument(
        "--output", type=Path, required=True, help="folder for results.json/.parquet"
    )
    downstream.add_argument(
        "--dump-requests", action="store_true", help="also write requests.jsonl"
    )
    downstream.add_argument(
        "--normalizations",
        default="default",
        help="accuracies to report: 'default' (each task's OLMo default plus the free ones: "
        "none, per_token, per_char), 'all' (adds unconditional everywhere), or a comma-separated "
        "list; the unconditional requests are scored only where unconditional is reported",
    )
    downstream.add_argument("--convention", choices=("separate", "joint"), default="separate")
    downstream.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="sequences per forward pass (generative tasks: prompts decoded together)",
    )
    downstream.add_argument("--device", default="cpu", help="cpu or cuda")
    downstream.set_defaults(func=_downstream)

    perplexity = verbs.add_parser(
        "perplexity",
        help="Paloma-style perplexity and bits per byte per source (and domain)",
    )
    perplexity.add_argument("--model", required=True, help="checkpoint folder, or hf:PATH")
    perplexity.add_argument(
        "--data", nargs="+", required=True, help="Dolma-format files or folders"
    )
    perplexity.add_argument(
        "--output", type=Path, required=True, help="folder for results.json/.parquet"
    )
    perplexity.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    perplexity.add_argument("--device", default="cpu", help="cpu or cuda")
    perplexity.set_defaults(func=_perplexity)


def _step(model_spec: str) -> int | None:
    import json

    path = Path(model_spec) / "train_state.json"
    if path.is_file():
        return int(json.loads(path.read_text())["step"])
    return None


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        value = row["value"]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        where = row.get("task") or f"{row.get('source')}/{row.get('domain') or '-'}"
        print(f"  {where:<28} {row['metric']:<22} {shown:>10}  (n={row['count']})")


def _downstream(args: argparse.Namespace) -> int:
    from olmo_nn.eval.downstream import evaluate_spec, resolve_normalizations, write_results
    from olmo_nn.eval.generative import (
        check_num_shots,
        evaluate_generative_task,
        generative_spec,
        load_generative_task,
    )
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.suites import is_suite
    from olmo_nn.eval.tasks import expand_task_names, get_task_spec, load_task, shots_of

    # Every user mistake (a task name, a format, shots, a normalization) is found before the
    # model loads.
    names = expand_task_names(args.tasks, format=args.format)
    generative = {name: gen for name in names if (gen := generative_spec(name)) is not None}
    for generative_task in generative.values():
        check_num_shots(generative_task, args.num_shots)
    specs = {name: get_task_spec(name) for name in names if name not in generative}
    for spec in specs.values():
        resolve_normalizations(args.normalizations, spec.default_normalization)
        if args.num_shots is not None:
            shots_of(spec, args.num_shots, None)
    model = load_language_model(args.model, device=args.device)
    results: list[Any] = []  # TaskResult and GenerationResult: both give rows and requests
    for name in names:
        if name in generative:
            prompts = load_generative_task(name, limit=args.limit, num_shots=args.num_shots)
            results.append(
                evaluate_generative_task(model, name, prompts, batch_size=args.batch_size)
            )
            continue
        spec = specs[name]
        instances = load_task(name, limit=args.limit, num_shots=args.num_shots)
        results.append(
            evaluate_spec(
                model,
                spec,
                instances,
                convention=args.convention,
                batch_size=args.batch_size,
                normalizations=args.normalizations,
            )
        )
    rows = write_results(
        results,
        args.output,
        model=args.model,
        step=_step(args.model),
        dump_requests=args.dump_requests,
        suites=[name.strip() for name in args.tasks.split(",") if is_suite(name.strip())],
    )
    # Each task's `acc`, or (when its default was not asked for) the accuracies that were;
    # MMLU's averages.
    with_default = {r["task"] for r in rows if r["metric"] == "acc"}
    _print_rows(
        [
            r
            for r in rows
            if r["metric"] in ("acc", "acc_categories", "exact_match", "f1")
            or (
                r["task"] not in with_default
                and r["metric"].startswith("acc_")
                and not r["metric"].endswith("_stderr")
            )
        ]
    )
    truncated = sum(int(r["value"]) for r in rows if r["metric"] == "truncated_requests")
    if truncated:
        print(f"  {truncated} request(s) had contexts longer than the model's window: truncated "
              "from the left (see truncated_requests in the results)")  # fmt: skip
    print(f"results: {args.output / 'results.json'}")
    return 0


def _perplexity(args: argparse.Namespace) -> int:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from olmo_nn.data import read_documents
    from olmo_nn.eval.models import load_language_model
    from olmo_nn.eval.perplexity import evaluate_perplexity

    model = load_language_model(args.model, device=args.device)
    reader = read_documents(args.data)
    documents = (
        {"id": d.id, "text": d.text, "source": d.source, "metadata": d.metadata or {}}
        for d in reader
    )
    rows = evaluate_perplexity(model, documents, batch_size=args.batch_size)
    report = reader.report
    if report.num_documents == 0:
        first = f"; the first: {report.errors[0]}" if report.errors else ""
        inputs = ", ".join(map(str, args.data))
        raise ValueError(
            f"no document in {inputs} could be read ({report.num_errors} input record(s) "
            f"rejected{first}): nothing was scored and no results were written"
        )
    step = _step(args.model)
    rows = [{"model": args.model, "step": step, **row} for row in rows]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), args.output / "results.parquet")
    _print_rows(rows)
    if reader.report.num_errors:
        print(f"  {reader.report.num_errors} unreadable input record(s) skipped and reported:")
        for error in reader.report.errors[:5]:
            print(f"    {error}")
    print(f"results: {args.output / 'results.json'}")
    return 0
