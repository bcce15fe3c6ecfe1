"""``olmo data curate``: the curation chain from the command line.

Registered into the ``olmo`` command through the ``olmo.commands`` entry point, so the model
library never imports the curation library.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_nn.cli.arguments import int_at_least
from olmo_nn.data.workers import exit_on_sigterm

if TYPE_CHECKING:
    from olmo_assets.curation.config import CurationConfig

__all__ = ["register"]

_CONFIG_HELP = (
    "mix config: a YAML file, or a built-in mix by name (dolma_v1_5, gopher_paper); "
    "default: dolma_v1_5"
)
_WORKERS_HELP = "tagging processes (default: one per core)"
_DEDUP_STATE_HELP = (
    "carry deduplication across runs: load the dedup state from DIR if it exists (so this "
    "run's documents are deduplicated against every earlier run's), and replace it atomically "
    "with the updated state when the run succeeds"
)


def register(commands: Any, groups: dict[str, Any]) -> None:
    """Add ``olmo data curate``."""
    del commands
    actions = groups["data"]
    curate = actions.add_parser(
        "curate",
        help="run the curation chain: tag, dedup, decontaminate, mix (Dolma-style)",
        description=(
            "Read Dolma-format sources, tag every document, deduplicate, decontaminate and mix "
            "by the config's rules. OUT gets documents/, validation/, attributes/, removed/, "
            "quarantine/ and report.json (every input record accounted for)."
        ),
    )
    curate.add_argument("--config", help=_CONFIG_HELP)
    curate.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH_OR_GLOB",
        help="a source and its files; adds it or points an existing one elsewhere (repeatable)",
    )
    curate.add_argument(
        "--output", type=Path, required=True, help="output folder (replaced atomically)"
    )
    curate.add_argument("--workers", type=int_at_least(1), help=_WORKERS_HELP)
    curate.add_argument(
        "--overwrite", action="store_true", help="replace an existing output folder"
    )
    curate.add_argument(
        "--tokenize",
        action="store_true",
        help="also write OLMo token shards of the kept documents (shards/) and validation splits",
    )
    curate.add_argument("--tokenizer", help="tokenizer for --tokenize (default: OLMo's)")
    curate.add_argument("--dedup-state", type=Path, metavar="DIR", help=_DEDUP_STATE_HELP)
    curate.set_defaults(func=_curate, stages=("tag", "dedup", "mix"))

    for stage, text in (
        ("tag", "run the taggers only: attributes/ and quarantine/ (no decisions)"),
        (
            "dedup",
            "run deduplication and decontamination only: attributes/dedup, minhash, decontam",
        ),
        ("mix", "decide, replace spans, sample and write documents, from earlier runs' attributes"),
    ):
        parser = actions.add_parser(stage, help=text, description=text)
        parser.add_argument("--config", help=_CONFIG_HELP)
        parser.add_argument(
            "--source", action="append", default=[], metavar="NAME=PATH_OR_GLOB",
            help="a source and its files (repeatable)",
        )  # fmt: skip
        parser.add_argument("--output", type=Path, required=True, help="output folder")
        parser.add_argument("--workers", type=int_at_least(1), help=_WORKERS_HELP)
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing output folder"
        )
        if stage == "tag":
            parser.add_argument("--taggers", help="comma-separated taggers (default: the config's)")
        if stage == "dedup":
            parser.add_argument("--dedup-state", type=Path, metavar="DIR", help=_DEDUP_STATE_HELP)
        if stage == "mix":
            parser.add_argument(
                "--attributes", type=Path, nargs="+", required=True, metavar="RUN",
                help="output folders of earlier `olmo data tag` / `olmo data dedup` runs",
            )  # fmt: skip
            parser.add_argument("--tokenize", action="store_true", help="also write token shards")
            parser.add_argument("--tokenizer", help="tokenizer for --tokenize (default: OLMo's)")
        parser.set_defaults(func=_curate, stages=(stage,))

    report = actions.add_parser(
        "report",
        help="What's-In-My-Big-Data-style report of a curation output (DuckDB tables, PNG plots)",
    )
    report.add_argument(
        "output", type=Path, metavar="OUT", help="a folder written by `olmo data curate`"
    )
    report.add_argument("--top", type=int, default=20, help="rows in the top-N tables (default 20)")
    report.add_argument("--json", action="store_true", help="print the tables as JSON")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from olmo_assets.curation.report import build_report, print_report

    if not (args.output / "report.json").is_file():
        raise FileNotFoundError(
            f"{args.output} has no report.json; is it a `olmo data curate` output?"
        )
    tables = build_report(args.output, top=args.top)
    if args.json:
        print(json.dumps(tables, indent=2, default=str))
    else:
        print_report(tables)
        print(
            f"\ntables: {args.output / 'report' / 'tables.json'}; plots: {args.output / 'report'}/*.png"
        )
    return 0


def _parse_sources(items: list[str]) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--source {item!r} must look like NAME=PATH_OR_GLOB")
        sources.setdefault(name, []).append(path)
    return sources


def _load_config(value: str | None) -> CurationConfig:
    """``--config``: a YAML file, else a built-in mix name (default: ``dolma_v1_5``)."""
    from olmo_assets.curation.config import CurationConfig
    from olmo_assets.curation.mixes import MIXES

    if value is None:
        return MIXES["dolma_v1_5"]()
    if Path(value).exists():
        return CurationConfig.load(value)
    if value in MIXES:
        return MIXES[value]()
    raise FileNotFoundError(
        f"--config {value}: no such file, and not a built-in mix ({', '.join(MIXES)})"
    )


def _curate(args: argparse.Namespace) -> int:
    from olmo_assets.curation.config import SourceConfig
    from olmo_assets.curation.pipeline import curate

    config = _load_config(args.config)
    overrides = _parse_sources(args.source)
    sources = list(config.sources)
    for name, paths in overrides.items():
        existing = [i for i, s in enumerate(sources) if s.name == name]
        if existing:
            sources[existing[0]] = sources[existing[0]].replace(paths=paths)
        else:
            sources.append(SourceConfig(name=name, paths=paths))
    if not sources:
        raise ValueError("no sources: pass --source NAME=PATH (or a --config that lists sources)")
    config = config.replace(sources=sources)
    if args.workers is not None:
        config = config.replace(workers=args.workers)
    if getattr(args, "tokenize", False):
        config = config.replace(tokenize=True, tokenizer=args.tokenizer or config.tokenizer)
    if getattr(args, "taggers", None):
        taggers = [t.strip() for t in args.taggers.split(",") if t.strip()]
        config = config.replace(
            taggers=taggers, sources=[s.replace(taggers=None) for s in config.sources]
        )
    if args.output.exists() and not args.overwrite:
        raise ValueError(f"{args.output} already exists; pass --overwrite to replace it")
    with exit_on_sigterm():  # a terminated run removes its staging, as a failed one does
        summary = curate(
            config,
            args.output,
            progress=True,
            stages=args.stages,
            attributes_from=getattr(args, "attributes", None),
            dedup_state=getattr(args, "dedup_state", None),
        )
    report = summary.to_dict()
    print(f"curated {len(report['sources'])} source(s) into {args.output} in {summary.seconds:.1f} s "
          f"({report['total_input_bytes'] / 1e6 / max(summary.seconds, 1e-9):.2f} MB/s)")  # fmt: skip
    for name, counts in report["sources"].items():
        print(
            f"  {name}: {json.dumps({k: counts[k] for k in ('input_records', 'kept', 'validation', 'removed', 'quarantined', 'passed')})}"
        )
        for stage, number in counts["removed_by_stage"].items():
            print(f"      removed at {stage}: {number}")
    print(
        f"  accounting adds up: {report['accounting_ok']} (report: {args.output / 'report.json'})"
    )
    if summary.dedup_state is not None:
        _print_state(args.dedup_state, summary.dedup_state)
    return 0


def _print_state(folder: Path, manifest: dict[str, Any]) -> None:
    """One line per filter: how full the saved state is, and its false-positive rate now."""
    settings = manifest["dedup"]
    print(
        f"dedup state saved to {folder}: {manifest['documents']} documents over "
        f"{len(manifest['runs'])} run(s) (filters sized for {settings['expected_documents']})"
    )
    rates = {f"dedup {kind}": s for kind, s in manifest["stats"].get("dedup", {}).items()}
    for name, stats in rates.items():
        print(
            f"  {name}: {stats['num_added']} items, fill {stats['fill_ratio']:.3f}, estimated "
            f"false-positive rate {stats['estimated_false_positive_rate']:.2e}"
        )
    minhash = manifest["stats"].get("minhash", {})
    if "max_estimated_false_positive_rate" in minhash:
        print(
            "  minhash bands: estimated false-positive rate per band "
            f"{minhash['max_estimated_false_positive_rate']:.2e}"
        )
    elif minhash:
        print(f"  minhash signatures: {minhash['num_docs']} ({minhash['signature_bytes']} bytes)")
    if manifest["documents"] > settings["expected_documents"]:
        print(
            f"  warning: more documents than dedup.expected_documents="
            f"{settings['expected_documents']}: false positives grow; start a new state with a "
            "larger expected_documents"
        )
