"""``olmo query "SQL"`` (lineage questions over the lab's DuckDB database) and ``olmo lab``
(the pipeline's declaration: ``olmo lab stages``, ``olmo lab dvc-yaml``; the training job
for Kubernetes: ``olmo lab kubernetes``).

Registered into the ``olmo`` command through the ``olmo.commands`` entry point (see
``olmo_nn/cli/main.py``), so the model library never imports the lab.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["register"]

_DESCRIPTION = """\
Run SQL on the lab's DuckDB database (lab/lab.duckdb). Its relations are refreshed over
the current files first: documents, validation, removed, quarantine, attributes_<tagger>
(one per tagger), shard_index, checkpoints, training_metrics, downstream_results,
perplexity_results, evaluation; from the training run: data_order, batch_instances,
instance_documents; for lineage: batch_documents, source_tokens_by_step,
source_share_by_checkpoint, eval_source_share. `--tables` lists them, and what builds
the artifact of each one that is not ready. The SQL cannot change anything: only queries
run (no COPY, ATTACH, CREATE, SET, ...), reading files under lab/ only; `--export FILE`
writes a result to one file outside lab/."""

_EXAMPLES = """\
examples:
  olmo query --tables
  olmo query "SELECT source, count(DISTINCT doc_id) FROM batch_documents WHERE step <= 80 GROUP BY source"
  olmo query "SELECT name, source, step, share, value FROM eval_source_share WHERE metric = 'acc'"
  olmo query "SELECT * FROM removed" --export removed.parquet
"""


def register(commands: Any, groups: dict[str, Any]) -> None:
    """Add ``olmo query`` and ``olmo lab``."""
    del groups
    _register_lab(commands)
    parser = commands.add_parser(
        "query",
        help="SQL over the lab's artifacts: documents, attributes, shards, batches, results",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sql", nargs="?", metavar="SQL", help="the query (DuckDB SQL)")
    parser.add_argument(
        "--repo",
        type=Path,
        help="the lab's repository (default: OLMO_LAB_REPO, else the nearest params.yaml above)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output: a table (default), CSV with a header, or a JSON array of objects",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=100,
        metavar="N",
        help="rows shown by --format table (default %(default)s); csv and json print all",
    )
    parser.add_argument(
        "--tables", action="store_true", help="list the views and tables, and what each needs"
    )
    parser.add_argument(
        "--export",
        type=Path,
        metavar="FILE",
        help="write the result to FILE (.parquet, .csv or .json), outside lab/, instead of "
        "printing it (the query itself can never write)",
    )
    parser.set_defaults(func=run_query_command)


def _plain(value: Any) -> Any:
    """JSON for what DuckDB returns beyond JSON's types (decimals, dates, bytes)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def run_query_command(args: argparse.Namespace) -> int:
    """Handler of ``olmo query``."""
    from olmo_assets.lab.params import Lab
    from olmo_assets.lab.query import read_only_sql, session

    lab = Lab.load(args.repo)
    if args.export is not None:
        _check_export(lab.root, args.export)
    if args.tables:
        sql = (
            "SELECT name, kind, CASE WHEN ready THEN description ELSE 'not ready: ' || needs END "
            "AS description FROM lab_tables ORDER BY name"
        )
    elif args.sql:
        sql = args.sql
    else:
        raise ValueError('give a query, e.g. olmo query "SELECT * FROM evaluation", or --tables')
    with session(lab) as con:
        relation = read_only_sql(con, sql)
        if relation is None:  # a statement without rows
            return 0
        if args.export is not None:
            table = relation.to_arrow_table()
            _export(table, args.export)
            print(f"wrote {table.num_rows} rows to {args.export}")
        elif args.format == "csv":
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(relation.columns)
            writer.writerows(relation.fetchall())
        elif args.format == "json":
            records = [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]
            print(json.dumps(records, default=_plain, ensure_ascii=False))
        else:
            # DuckDB's own renderer: column types, widths fitted to the terminal, long results
            # elided in the middle.
            width = shutil.get_terminal_size((120, 40)).columns
            relation.show(max_width=width, max_rows=args.max_rows)
    return 0


_EXPORT_SUFFIXES = (".parquet", ".csv", ".json")


def _check_export(lab_root: Path, path: Path) -> None:
    """``--export``: a file of a known kind, never inside the lab's artifacts."""
    if path.resolve().is_relative_to(lab_root.resolve()):
        raise ValueError(
            f"--export {path}: inside the lab's artifacts ({lab_root}); write the export elsewhere"
        )
    if path.suffix not in _EXPORT_SUFFIXES:
        raise ValueError(f"--export {path}: the file name must end in .parquet, .csv or .json")
    if path.is_dir():
        raise ValueError(f"--export {path} is a directory; name a file")


def _export(table: Any, path: Path) -> None:
    """Write an Arrow table to ``path`` (Parquet, CSV with a header, or a JSON array)."""
    import pyarrow.csv
    import pyarrow.parquet

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pyarrow.parquet.write_table(table, path)
    elif path.suffix == ".csv":
        pyarrow.csv.write_csv(table, path)
    else:
        text = json.dumps(table.to_pylist(), default=_plain, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")


def _register_lab(commands: Any) -> None:
    lab = commands.add_parser(
        "lab",
        help="the pipeline's declaration: its stages, and dvc.yaml generated from it",
        description="The pipeline is declared once (olmo_assets/lab/pipeline.py); these show it "
        "and write what is derived from it.",
    )
    actions = lab.add_subparsers(dest="action", required=True, metavar="ACTION")
    stages = actions.add_parser(
        "stages",
        help="list the stages: what each reads and writes, its parameters and code",
        description="List the stages of the pipeline with their fanout, the artifacts they read "
        "and write (Dagster asset keys), the params.yaml keys and files they track, the code "
        "they depend on and their checks.",
    )
    stages.set_defaults(func=_stages_command)
    dvc = actions.add_parser(
        "dvc-yaml",
        help="write dvc.yaml from the declaration (or --check that it is current)",
        description="Write dvc.yaml, generated from the pipeline's declaration, into the lab's "
        "repository; with --check, write nothing and exit 1 if the file differs.",
    )
    dvc.add_argument("--repo", type=Path, help="the lab's repository (default: as olmo query)")
    dvc.add_argument(
        "--check", action="store_true", help="exit 1, naming the fix, if dvc.yaml is not current"
    )
    dvc.set_defaults(func=_dvc_yaml_command)
    shards = actions.add_parser(
        "shards",
        help="plan each source's files into shards (sources/shards.yaml, sources/dvc.yaml)",
        description="List each source's files and plan them into shards of about shard_mb: "
        "files already planned keep their shard, new files go into new shards. Writes "
        "sources/shards.yaml and sources/dvc.yaml (commit both); with a Dagster instance "
        "(DAGSTER_HOME), also adds the new shards as partitions and observes changed files.",
    )
    shards.add_argument("--repo", type=Path, help="the lab's repository (default: as olmo query)")
    shards.set_defaults(func=_shards_command)
    kubernetes = actions.add_parser(
        "kubernetes",
        help="print the training job as Kubernetes objects (kubectl apply -f -)",
        description="Render the training run of params.yaml as a headless Service and an "
        "Indexed Job (one pod per train.slurm.nodes, train.nproc processes each), from "
        "train.kubernetes: multi-document YAML for `kubectl apply -f -`. The lab does not "
        "apply or follow the job; it needs the token shards, whose folders the trainer reads.",
    )
    kubernetes.add_argument(
        "--repo", type=Path, help="the lab's repository (default: as olmo query)"
    )
    kubernetes.add_argument(
        "--output", type=Path, metavar="FILE", help="write the YAML to FILE instead of printing it"
    )
    kubernetes.set_defaults(func=_kubernetes_command)


def _stages_command(args: argparse.Namespace) -> int:
    del args
    from olmo_assets.lab.pipeline import STAGES

    for stage in STAGES:
        runs = f"per {' × '.join(stage.fanout.keys)}" if stage.fanout.keys else "once"
        print(f"{stage.name}  ({stage.group}, {runs})")
        reads = [r.artifact + (" (every one)" if r.every else "") for r in stage.reads]
        rows = [
            ("writes", ", ".join(a.name for a in stage.writes)),
            ("reads", ", ".join(reads) or "-"),
            ("params", ", ".join(stage.params) or "-"),
            ("files", ", ".join(stage.files) or "-"),
            ("code", ", ".join(stage.code_paths)),
            ("checks", ", ".join(c.name for _, c in stage.checks) or "-"),
        ]
        for label, value in rows:
            print(f"    {label:<7} {value}")
    return 0


def _shards_command(args: argparse.Namespace) -> int:
    import os

    from olmo_assets.curation.external import SourceError
    from olmo_assets.defs.sources import register
    from olmo_assets.lab.params import Lab

    lab = Lab.load(args.repo)
    instance = None
    if os.environ.get("DAGSTER_HOME"):
        from olmo_assets.defs.record import dagster_instance

        instance = dagster_instance(lab)
    try:
        done = register(lab, instance)
    except SourceError as error:  # a source that cannot be listed: say which, and why
        print(f"olmo lab shards: error: {error}", file=sys.stderr)
        return 2
    for source in lab.params.sources:
        print(f"{source}: {len(lab.source_shards(source))} shard(s)")
    print(done.summary())
    return 0


def _dvc_yaml_command(args: argparse.Namespace) -> int:
    from olmo_assets.lab.dvcyaml import dvc_yaml, sources_dvc_yaml
    from olmo_assets.lab.params import Lab, find_repo_root
    from olmo_assets.lab.pipeline import SOURCES_DVC_YAML

    repo = args.repo or find_repo_root()
    path = repo / "dvc.yaml"
    text = dvc_yaml()
    if args.check:
        lab = Lab.load(repo)
        sources = repo / SOURCES_DVC_YAML
        stale = [
            (p, fix)
            for p, t, fix in (
                (path, text, "`olmo lab dvc-yaml`"),
                (sources, sources_dvc_yaml(lab, lab.plan), "`olmo lab shards`"),
            )
            if not p.is_file() or p.read_text(encoding="utf-8") != t
        ]
        for p, fix in stale:
            print(f"{p} differs from what olmo_assets/lab/pipeline.py and the shard plan "
                  f"declare: run {fix} and commit it", file=sys.stderr)  # fmt: skip
        if not stale:
            print(f"{path} and {sources} are up to date with olmo_assets/lab/pipeline.py")
        return 1 if stale else 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _kubernetes_command(args: argparse.Namespace) -> int:
    from olmo_assets.lab.kubernetes import lab_objects, manifest
    from olmo_assets.lab.params import Lab

    text = manifest(lab_objects(Lab.load(args.repo)))
    if args.output is None:
        sys.stdout.write(text)
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0
