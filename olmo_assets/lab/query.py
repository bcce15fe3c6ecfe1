"""One DuckDB database over the lab's artifacts (``lab/lab.duckdb``), for lineage questions.

:func:`open_database` opens it and refreshes its relations, so they follow the files:

* views over the files, read at query time: ``documents``, ``validation``, ``removed``,
  ``quarantine`` (the mix's output), ``attributes_<tagger>`` (one per tagger, with a
  ``source`` column), ``shard_index`` (``folder, shard, split, doc_index, file, start, end, source, id``),
  ``checkpoints``, ``training_metrics``, ``downstream_results``, ``perplexity_results`` and
  ``evaluation`` (both results, one row per checkpoint step, benchmark and metric);
* tables computed from the training run by :mod:`olmo_assets.lab.lineage` (rebuilt only
  when the run, its data order or the shards change): ``data_order``, ``batch_instances``
  (every optimizer step's global batch), ``instance_documents`` (the documents in each
  instance a batch used, with their token spans); and ``checkpoint_steps``;
* lineage views: ``batch_documents`` (``step, row, instance, source, doc_id, tokens, …``),
  ``source_tokens_by_step``, ``source_share_by_checkpoint`` (the token share of each source
  seen up to each checkpoint, and since the previous one) and ``eval_source_share`` (those
  shares beside every evaluation score at the checkpoint, with the score's change);
* ``lab_tables``: every relation, whether it is ready, and what builds the artifact it lacks.

A relation whose artifact does not exist yet is left out; :func:`run_query` turns DuckDB's
"table does not exist" into a message naming the artifact and how to build it.

User SQL (:func:`run_query`, ``olmo query``) cannot change anything: it runs on a read-only
connection that reads files under ``lab/`` only, with its settings locked, and only queries
are accepted (no COPY, ATTACH, EXPORT, CREATE, SET, ...). ``olmo query --export FILE``
writes a result to one file outside ``lab/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo_assets.lab.lineage import TrainingBatches, load_training_batches
from olmo_assets.lab.params import Lab

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = [
    "QueryResult",
    "TableInfo",
    "open_database",
    "read_only_sql",
    "refresh",
    "run_query",
    "session",
    "source_tokens_at",
]

_DOLMA_COLUMNS = "{'id': 'VARCHAR', 'text': 'VARCHAR', 'source': 'VARCHAR', 'metadata': 'JSON'}"
_MISSING_TABLE = re.compile(r"Table with name (\w+) does not exist")


@dataclass
class TableInfo:
    """One relation of the database, as ``lab_tables`` lists it."""

    name: str
    kind: str
    """``view`` or ``table``."""
    description: str
    ready: bool = True
    needs: str = ""
    """When not ready: the missing artifact and how to build it."""


@dataclass
class QueryResult:
    """A query's rows, as an Arrow table (empty for a statement that returns none)."""

    table: pa.Table

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        columns = [column.to_pylist() for column in self.table.columns]
        return list(zip(*columns, strict=True))


def _sql_string(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(_sql_string(p) for p in paths) + "]"


class _Catalog:
    """Creates or drops each relation, recording what it did for ``lab_tables``."""

    def __init__(self, lab: Lab, con: duckdb.DuckDBPyConnection) -> None:
        self.lab = lab
        self.con = con
        self.infos: dict[str, TableInfo] = {}

    def missing(self, what: Path | str, step: str) -> str:
        where = what.relative_to(self.lab.repo) if isinstance(what, Path) else what
        return (
            f"{where} does not exist yet (step `{step}` writes it): run `make demo` or "
            f"`dvc repro`, or materialize it in the Dagster UI (`make ui`)"
        )

    def view(self, name: str, description: str, sql: str | None, needs: str = "") -> None:
        """``CREATE VIEW name AS sql``; without ``sql`` the view is left out (``needs`` says why)."""
        if sql is not None:
            self.con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
        ready = sql is not None
        self.infos[name] = TableInfo(name, "view", description, ready, "" if ready else needs)

    def table(self, name: str, description: str, needs: str = "") -> None:
        """Record a table made elsewhere (``needs``: why it is not there)."""
        if needs:
            self.con.execute(f'DROP TABLE IF EXISTS "{name}"')
        self.infos[name] = TableInfo(name, "table", description, not needs, needs)

    def derived(self, name: str, description: str, sql: str, requires: Sequence[str]) -> None:
        """A view over other relations: ready when they all are."""
        lacking = [self.infos[r] for r in requires if not self.infos[r].ready]
        if lacking:
            self.view(name, description, None, lacking[0].needs)
        else:
            self.view(name, description, sql)


# -- views over files ----------------------------------------------------------------------------


def _read_parquet(files: Sequence[Path]) -> str | None:
    """A view's query over Parquet files (None when there are none)."""
    if not files:
        return None
    return f"SELECT * FROM read_parquet({_sql_list(files)}, union_by_name=true)"


def _file_views(catalog: _Catalog) -> None:
    lab = catalog.lab
    curated = lab.curated
    for name, folder, text in (
        ("documents", "documents", "kept documents of the mix (Dolma: id, text, source, metadata)"),
        ("validation", "validation", "held-out validation documents per source"),
    ):
        # <source>/<shard>/part-*.jsonl.gz
        files = sorted((curated / folder).glob("*/*/*.jsonl.gz"))
        catalog.view(
            name,
            text,
            f"SELECT * FROM read_ndjson({_sql_list(files)}, columns={_DOLMA_COLUMNS})"
            if files
            else None,
            catalog.missing(curated / folder, "mix"),
        )
    catalog.view(
        "removed",
        "documents the mix removed: id, source, stage, reason",
        _read_parquet(sorted((curated / "removed").glob("*/*.parquet"))),
        catalog.missing(curated / "removed", "mix"),
    )

    sql = _read_parquet(sorted((curated / "quarantine").glob("*/*.parquet")))
    if sql is None and (curated / "report.json").is_file():  # the mix quarantined nothing
        sql = (
            "SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS file, NULL::BIGINT AS line, "
            "NULL::VARCHAR AS error, NULL::BLOB AS raw WHERE false"
        )
    catalog.view(
        "quarantine",
        "records the mix could not read: source, file, line, error, raw",
        sql,
        catalog.missing(curated / "report.json", "mix"),
    )

    # attributes/<tagger>/<source>/part-*.parquet, in every tag run (one per shard) and in dedup
    files_by_tagger: dict[str, list[Path]] = {}
    for run in [*lab.root.glob("tagged/*/*/attributes"), lab.dedup / "attributes"]:
        for path in run.glob("*/*/*.parquet"):
            files_by_tagger.setdefault(path.parent.parent.name, []).append(path)
    for tagger, files in sorted(files_by_tagger.items()):
        catalog.view(
            f"attributes_{tagger}",
            f"the {tagger} tagger's attributes of every document, by source and id",
            r"SELECT regexp_extract(filename, '([^/]+)/[^/]+\.parquet$', 1) AS source, "
            f"* EXCLUDE (filename) FROM read_parquet({_sql_list(sorted(files))}, "
            "union_by_name=true, filename=true)",
        )
    if not files_by_tagger:
        catalog.view(
            "attributes_<tagger>",
            "one view per tagger (attributes_gopher, attributes_dedup, ...)",
            None,
            catalog.missing(lab.root / "tagged", "tag"),
        )

    # <source>/<shard>/<split>/index.parquet of the sources and shards params.yaml and the
    # plan name now (not those of a source since removed)
    indexes = sorted(
        path
        for source in lab.params.sources
        for shard in lab.source_shards(source)
        for path in lab.token_shards(source, shard).glob("*/index.parquet")
    )
    catalog.view(
        "shard_index",
        "the token shards' document index: folder, shard, split, doc_index, file, start, "
        "end, source, id (doc_index counts within the folder)",
        (
            r"SELECT regexp_extract(filename, '^(.*)/index\.parquet$', 1) AS folder, "
            r"regexp_extract(filename, '([^/]+)/[^/]+/index\.parquet$', 1) AS shard, "
            r"regexp_extract(filename, '([^/]+)/index\.parquet$', 1) AS split, "
            "file_row_number AS doc_index, * EXCLUDE (filename, file_row_number) "
            f"FROM read_parquet({_sql_list(indexes)}, filename=true, file_row_number=true)"
        )
        if indexes
        else None,
        catalog.missing(lab.shards, "tokenize"),
    )
    records = sorted(lab.root.glob("checkpoints/step*/checkpoint.json"))
    catalog.view(
        "checkpoints",
        "kept checkpoints: step, checkpoint_path, weights_bytes, folder_bytes, sha256, "
        "parameters, tokens_seen, epoch",
        f"SELECT * FROM read_json({_sql_list(records)})" if records else None,
        catalog.missing(lab.root / "checkpoints", "checkpoint"),
    )
    metrics = lab.run_dir / "metrics.jsonl"
    catalog.view(
        "training_metrics",
        "one row per optimizer step: loss, lr, grad_norm, tokens_seen, batch_fingerprint, ...",
        # A cut-off last line (a crash while it was written) is skipped, as resume repairs it:
        # DuckDB reads it as a row of nulls.
        f"SELECT * FROM read_json({_sql_string(metrics)}, format='newline_delimited', "
        "sample_size=-1, ignore_errors=true) WHERE step IS NOT NULL"
        if metrics.is_file()
        else None,
        catalog.missing(metrics, "train"),
    )
    downstream = sorted(lab.root.glob("eval/downstream/step*/*/results.parquet"))
    catalog.view(
        "downstream_results",
        "downstream results: model, step, task, count, metric, value",
        _read_parquet(downstream),
        catalog.missing(lab.root / "eval" / "downstream", "downstream"),
    )
    perplexity = sorted(lab.root.glob("eval/perplexity/step*/results.parquet"))
    catalog.view(
        "perplexity_results",
        "perplexity results: model, step, source, domain, metric, value, count",
        _read_parquet(perplexity),
        catalog.missing(lab.root / "eval" / "perplexity", "perplexity"),
    )
    parts = []
    if downstream:
        parts.append(
            "SELECT step, 'downstream' AS kind, task AS name, metric, value, count, model "
            "FROM downstream_results"
        )
    if perplexity:
        parts.append(
            "SELECT step, 'perplexity' AS kind, coalesce(source || '/' || domain, source) AS "
            "name, metric, value, count, model FROM perplexity_results"
        )
    catalog.view(
        "evaluation",
        "every evaluation score: step, kind (downstream|perplexity), name (task or source), "
        "metric, value, count, model",
        " UNION ALL ".join(parts) or None,
        catalog.missing(lab.root / "eval" / "downstream", "downstream"),
    )


# -- tables from the training run ----------------------------------------------------------------


def _checkpoint_steps(lab: Lab) -> list[int]:
    """Steps with a kept checkpoint, a checkpoint record or an evaluation."""
    names = [p.name for p in lab.run_dir.glob("checkpoints/step*-unsharded")]
    names += [p.name for p in lab.root.glob("checkpoints/step*")]
    names += [p.name for p in lab.root.glob("eval/*/step*")]
    return sorted({int(m.group(1)) for n in names if (m := re.match(r"step(\d+)", n))})


def _run_tables(catalog: _Catalog) -> None:
    lab, con = catalog.lab, catalog.con
    con.execute(
        "CREATE OR REPLACE TABLE checkpoint_steps AS SELECT unnest(?::BIGINT[]) AS step",
        [_checkpoint_steps(lab)],
    )
    catalog.table("checkpoint_steps", "steps with a kept checkpoint or an evaluation")
    descriptions = {
        "data_order": "the run's saved data order: epoch, position (in the epoch), instance",
        "batch_instances": "every optimizer step's global batch: step, row, position, epoch, "
        "instance",
        "instance_documents": "documents in each instance the batches used, with token spans "
        "(instance_start/end in the instance, doc_offset in the document)",
    }
    try:
        run = load_training_batches(lab)
        needs = "" if isinstance(run, TrainingBatches) else catalog.missing(run.path, run.step)
    except ValueError as error:  # the shards changed since the run
        needs = str(error)
    if needs or not isinstance(run, TrainingBatches):
        for name, description in descriptions.items():
            catalog.table(name, description, needs=needs)
        return
    con.execute("CREATE TABLE IF NOT EXISTS lab_cache (name VARCHAR PRIMARY KEY, key VARCHAR)")
    cached = con.execute("SELECT key FROM lab_cache WHERE name = 'lineage'").fetchone()
    existing = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if cached is None or cached[0] != run.key or not set(descriptions) <= existing:
        for name, table in run.tables().items():
            con.register("incoming", table)
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM incoming")
            con.unregister("incoming")
        con.execute("INSERT OR REPLACE INTO lab_cache VALUES ('lineage', ?)", [run.key])
    for name, description in descriptions.items():
        catalog.table(name, description)


# -- lineage views -------------------------------------------------------------------------------

_BATCH_DOCUMENTS = """
SELECT b.step, b.row, b.instance, d.source, d.doc_id, d.tokens, d.doc_index, d.folder,
       d.instance_start, d.instance_end, d.doc_offset
FROM batch_instances b JOIN instance_documents d USING (instance)
ORDER BY b.step, b.row, d.instance_start
"""

_SOURCE_TOKENS_BY_STEP = """
WITH per_step AS (
    SELECT step, source, sum(tokens)::BIGINT AS tokens FROM batch_documents GROUP BY step, source
), grid AS (
    SELECT s.step, src.source
    FROM (SELECT DISTINCT step FROM batch_instances) s, (SELECT DISTINCT source FROM per_step) src
), running AS (
    SELECT g.step, g.source, coalesce(p.tokens, 0) AS tokens,
           (sum(coalesce(p.tokens, 0)) OVER (PARTITION BY g.source ORDER BY g.step))::BIGINT
               AS tokens_so_far
    FROM grid g LEFT JOIN per_step p USING (step, source)
)
SELECT step, source, tokens, tokens_so_far,
       tokens_so_far / sum(tokens_so_far) OVER (PARTITION BY step) AS share_so_far
FROM running
ORDER BY step, source
"""

_SOURCE_SHARE_BY_CHECKPOINT = """
WITH at_checkpoints AS (
    SELECT step, source, tokens_so_far AS tokens, share_so_far AS share,
           tokens_so_far - coalesce(lag(tokens_so_far) OVER w, 0) AS interval_tokens
    FROM source_tokens_by_step
    WHERE step IN (SELECT step FROM checkpoint_steps)
    WINDOW w AS (PARTITION BY source ORDER BY step)
)
SELECT step, source, tokens, share, interval_tokens,
       interval_tokens / sum(interval_tokens) OVER (PARTITION BY step) AS interval_share
FROM at_checkpoints
ORDER BY step, source
"""

_EVAL_SOURCE_SHARE = """
WITH scores AS (
    SELECT step, kind, name, metric, value,
           value - lag(value) OVER (PARTITION BY kind, name, metric ORDER BY step) AS value_change
    FROM evaluation
    WHERE metric IN ('acc', 'perplexity', 'bits_per_byte')
)
SELECT e.step, e.kind, e.name, e.metric, e.value, e.value_change,
       s.source, s.share, s.interval_share, s.tokens
FROM scores e JOIN source_share_by_checkpoint s USING (step)
ORDER BY e.kind, e.name, e.metric, s.source, e.step
"""


def source_tokens_at(batches: TrainingBatches, step: int) -> list[dict[str, Any]]:
    """Each source's tokens in the global batches up to ``step`` (``source, tokens, share``):
    the rows ``source_tokens_by_step`` holds at ``step``, computed by the same SQL in an
    in-memory database over the run's batches up to ``step`` (so a checkpoint step can report
    them without the lab's database file, which one process at a time may open)."""
    import dataclasses

    import duckdb

    if not 1 <= step <= batches.last_step:
        raise ValueError(f"step {step} is outside the training run's steps 1..{batches.last_step}")
    con = duckdb.connect()
    try:
        tables = dataclasses.replace(batches, last_step=step).tables()
        for name in ("batch_instances", "instance_documents"):
            con.register(name, tables[name])
        con.execute(f"CREATE VIEW batch_documents AS {_BATCH_DOCUMENTS}")
        con.execute(f"CREATE VIEW source_tokens_by_step AS {_SOURCE_TOKENS_BY_STEP}")
        rows = con.execute(
            "SELECT source, tokens_so_far, share_so_far FROM source_tokens_by_step "
            "WHERE step = ? ORDER BY source",
            [step],
        ).fetchall()
    finally:
        con.close()
    return [{"source": s, "tokens": int(t), "share": float(f)} for s, t, f in rows]


def _lineage_views(catalog: _Catalog) -> None:
    catalog.derived(
        "batch_documents",
        "the documents of every training step's batch: step, row, instance, source, doc_id, "
        "tokens (of the document in the instance), ...",
        _BATCH_DOCUMENTS,
        ("batch_instances", "instance_documents"),
    )
    catalog.derived(
        "source_tokens_by_step",
        "tokens per source at each step, so far, and the share so far",
        _SOURCE_TOKENS_BY_STEP,
        ("batch_documents",),
    )
    catalog.derived(
        "source_share_by_checkpoint",
        "each source's token share seen up to each checkpoint (share) and since the previous "
        "one (interval_share)",
        _SOURCE_SHARE_BY_CHECKPOINT,
        ("source_tokens_by_step",),
    )
    catalog.derived(
        "eval_source_share",
        "every evaluation score (acc, perplexity, bits_per_byte) and its change since the "
        "previous checkpoint, beside each source's share at that checkpoint",
        _EVAL_SOURCE_SHARE,
        ("evaluation", "source_share_by_checkpoint"),
    )


# -- the database --------------------------------------------------------------------------------


def refresh(lab: Lab, con: duckdb.DuckDBPyConnection) -> list[TableInfo]:
    """Recreate every relation over the current files; returns what ``lab_tables`` lists."""
    catalog = _Catalog(lab, con)
    # Views of the previous refresh go first: one over files that are gone must not linger.
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    if "lab_tables" in {
        r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    }:
        previous = {r[0] for r in con.execute("SELECT name FROM lab_tables").fetchall()}
        for name in sorted(views & previous):
            con.execute(f'DROP VIEW "{name}"')
    _file_views(catalog)
    _run_tables(catalog)
    _lineage_views(catalog)
    infos = sorted(catalog.infos.values(), key=lambda i: (not i.ready, i.name))
    con.execute(
        "CREATE OR REPLACE TABLE lab_tables "
        "(name VARCHAR, kind VARCHAR, ready BOOLEAN, description VARCHAR, needs VARCHAR)"
    )
    con.executemany(
        "INSERT INTO lab_tables VALUES (?, ?, ?, ?, ?)",
        [[i.name, i.kind, i.ready, i.description, i.needs] for i in infos],
    )
    return infos


def open_database(lab: Lab, *, update: bool = True) -> duckdb.DuckDBPyConnection:
    """The lab's database (``lab/lab.duckdb``), its relations refreshed unless ``update=False``."""
    import duckdb

    lab.database.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(lab.database))
    except duckdb.IOException as error:
        raise ValueError(
            f"cannot open {lab.database}: {error}; is another `olmo query` running?"
        ) from None
    if update:
        refresh(lab, con)
    return con


def _explain_missing(con: duckdb.DuckDBPyConnection, error: Exception) -> str | None:
    """For "table X does not exist": which artifact X needs and how to build it."""
    match = _MISSING_TABLE.search(str(error))
    if match is None:
        return None
    name = match.group(1)
    lookup = "attributes_<tagger>" if name.startswith("attributes_") else name
    row = con.execute(
        "SELECT needs FROM lab_tables WHERE name = ? AND NOT ready", [lookup]
    ).fetchone()
    if row is None:
        return None
    return f"{name}: {row[0]}"


_READ_ONLY = (
    "olmo query runs read-only SQL (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE): "
    "{kind} is refused; to save a result, pass --export FILE"
)


def _read_only_connection(lab: Lab) -> duckdb.DuckDBPyConnection:
    """The database read-only, able to read files under ``lab/`` only, its settings locked.

    These settings confine reading; they do not stop writing: DuckDB lets ``COPY … TO`` write
    into an allowed directory even on a read-only connection. What keeps user SQL from
    writing is :func:`read_only_sql`, which runs queries only."""
    import duckdb

    con = duckdb.connect(str(lab.database), read_only=True)
    con.execute("SET allowed_directories = [?]", [f"{lab.root}/"])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def read_only_sql(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation | None:
    """The last statement's rows, when every statement of ``sql`` is a query; ``ValueError``
    for anything else (COPY, ATTACH, EXPORT, CREATE, SET, INSTALL, PRAGMA, ...), before any of
    them runs. The statement run is the one checked (``sql`` is not parsed again); the queries
    before it have no effect to keep, so they are not run."""
    import duckdb

    statements = con.extract_statements(sql)
    for statement in statements:
        if statement.type != duckdb.StatementType.SELECT:
            raise ValueError(_READ_ONLY.format(kind=statement.type.name))
    if not statements:
        return None
    return con.sql(statements[-1].query)


@contextmanager
def session(lab: Lab) -> Iterator[duckdb.DuckDBPyConnection]:
    """The database, refreshed, then reopened read-only (see :func:`_read_only_connection`)
    and closed on exit; run user SQL with :func:`read_only_sql`. DuckDB errors inside become
    ``ValueError``, or ``FileNotFoundError`` naming the artifact a missing relation needs and
    how to build it."""
    import duckdb

    open_database(lab).close()
    con = _read_only_connection(lab)
    try:
        yield con
    except duckdb.Error as error:
        explained = _explain_missing(con, error)
        if explained is not None:
            raise FileNotFoundError(explained) from None
        if isinstance(error, duckdb.PermissionException):
            raise ValueError(f"{error} (olmo query reads files under {lab.root} only)") from None
        raise ValueError(str(error)) from None
    finally:
        con.close()


def run_query(lab: Lab, sql: str) -> QueryResult:
    """Run the read-only ``sql`` on the refreshed database (see :func:`session`)."""
    import pyarrow as pa

    with session(lab) as con:
        relation = read_only_sql(con, sql)
        return QueryResult(pa.table({}) if relation is None else relation.to_arrow_table())
