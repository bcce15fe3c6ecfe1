"""``olmo query "SQL"``: lineage questions over the lab's DuckDB database.

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
the artifact of each one that is not ready."""

_EXAMPLES = """\
examples:
  olmo query --tables
  olmo query "SELECT source, count(DISTINCT doc_id) FROM batch_documents WHERE step <= 80 GROUP BY source"
  olmo query "SELECT name, source, step, share, value FROM eval_source_share WHERE metric = 'acc'"
"""


def register(commands: Any, groups: dict[str, Any]) -> None:
    """Add ``olmo query``."""
    del groups
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
    parser.set_defaults(func=run_query_command)


def _plain(value: Any) -> Any:
    """JSON for what DuckDB returns beyond JSON's types (decimals, dates, bytes)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def run_query_command(args: argparse.Namespace) -> int:
    """Handler of ``olmo query``."""
    from olmo_assets.lab.params import Lab
    from olmo_assets.lab.query import session

    lab = Lab.load(args.repo)
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
        relation = con.sql(sql)
        if relation is None:  # a statement without rows
            return 0
        if args.format == "csv":
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
