"""``olmo query``: the DuckDB views over a small lab answer lineage questions correctly."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from olmo_assets.lab.params import Lab
from olmo_assets.lab.query import open_database, run_query
from olmo_nn.cli.main import main
from olmo_nn.train.batch import reconstruct_batch
from olmo_nn.train.callbacks.metrics_file import read_metrics


def _rows(lab: Lab, sql: str) -> list[tuple]:
    return run_query(lab, sql).rows


def test_documents_are_the_kept_documents(built_lab: Lab) -> None:
    report = json.loads((built_lab.curated / "report.json").read_text(encoding="utf-8"))
    kept = {source: counts["kept"] for source, counts in report["sources"].items()}
    rows = _rows(built_lab, "SELECT source, count(*) FROM documents GROUP BY source")
    assert dict(rows) == {source: n for source, n in kept.items() if n}
    removed = _rows(built_lab, "SELECT count(*) FROM removed")[0][0]
    assert removed == sum(counts["removed"] for counts in report["sources"].values())
    assert _rows(built_lab, "SELECT count(*) FROM quarantine") == [(0,)]


def test_attribute_views_one_per_tagger(built_lab: Lab) -> None:
    names = {r[0] for r in _rows(built_lab, "SELECT name FROM lab_tables WHERE ready")}
    assert {"attributes_gopher", "attributes_dedup", "attributes_code"} <= names
    rows = _rows(built_lab, "SELECT source, count(*) FROM attributes_code GROUP BY source")
    assert [r[0] for r in rows] == ["code"]


def test_batch_documents_cover_every_step(built_lab: Lab) -> None:
    params = built_lab.params.train
    per_step = _rows(
        built_lab,
        "SELECT step, count(DISTINCT instance) FROM batch_documents GROUP BY step ORDER BY step",
    )
    assert per_step == [(step, params.global_batch_size) for step in range(1, params.max_steps + 1)]
    # Each instance's document spans tile its sequence exactly.
    tokens = _rows(built_lab, "SELECT DISTINCT sum(tokens) FROM batch_documents GROUP BY step, row")
    assert tokens == [(256,)]


def test_shard_index_names_each_source_shards_documents(built_lab: Lab) -> None:
    rows = _rows(
        built_lab,
        "SELECT folder, shard, split, count(*) FROM shard_index GROUP BY ALL ORDER BY ALL",
    )
    expected = []
    # (The small lab's code has no validation split.)
    for source, splits in (("code", ["train"]), ("prose", ["train", "validation"])):
        for split in splits:
            folder = built_lab.token_shards(source, "00000") / split
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            expected.append((str(folder), "00000", split, manifest["num_documents"]))
    assert rows == sorted(expected)
    # A batch's documents are found in the index by the folder the run read them from.
    unmatched = _rows(
        built_lab,
        "SELECT count(*) FROM batch_documents b LEFT JOIN shard_index s "
        "ON s.folder = b.folder AND s.doc_index = b.doc_index "
        "WHERE s.id IS DISTINCT FROM b.doc_id",
    )
    assert unmatched == [(0,)]


def test_batch_documents_match_olmo_batch(built_lab: Lab) -> None:
    batch = reconstruct_batch(built_lab.run_dir, 3)
    expected = sorted(
        (i.position, i.instance, d.source, d.id) for i in batch.instances for d in i.documents
    )
    rows = _rows(
        built_lab, "SELECT row, instance, source, doc_id FROM batch_documents WHERE step = 3"
    )
    assert sorted(rows) == expected
    assert batch.matches is True


def test_sources_before_a_checkpoint(built_lab: Lab) -> None:
    rows = _rows(
        built_lab,
        "SELECT source, count(DISTINCT doc_id) FROM batch_documents WHERE step <= 2 "
        "GROUP BY source ORDER BY source",
    )
    first_two = {
        (d.source, d.id)
        for step in (1, 2)
        for i in reconstruct_batch(built_lab.run_dir, step).instances
        for d in i.documents
    }
    sources = sorted({s for s, _ in first_two})
    assert rows == [(s, sum(1 for src, _ in first_two if src == s)) for s in sources]


def test_source_share_by_checkpoint(built_lab: Lab) -> None:
    metrics = {m["step"]: m for m in read_metrics(built_lab.run_dir)}
    rows = _rows(
        built_lab,
        "SELECT step, sum(tokens), sum(share), sum(interval_share) "
        "FROM source_share_by_checkpoint GROUP BY step ORDER BY step",
    )
    assert [r[0] for r in rows] == built_lab.params.eval.checkpoints
    for step, tokens, share, interval_share in rows:
        assert tokens == metrics[step]["tokens_seen"]
        assert share == pytest.approx(1.0)
        assert interval_share == pytest.approx(1.0)


def test_eval_source_share_joins_scores_and_shares(built_lab: Lab) -> None:
    params = built_lab.params.eval
    sources = _rows(built_lab, "SELECT count(DISTINCT source) FROM source_share_by_checkpoint")
    rows = _rows(
        built_lab,
        "SELECT step, name, value, value_change FROM eval_source_share WHERE metric = 'acc' "
        "AND source = 'code' ORDER BY name, step",
    )
    assert len(rows) == len(params.tasks) * len(params.checkpoints)
    total = _rows(built_lab, "SELECT count(*) FROM eval_source_share WHERE metric = 'acc'")
    assert total[0][0] == len(rows) * sources[0][0]
    for task in params.tasks:
        (first, *_, last) = [r for r in rows if r[1] == task]
        assert first[3] is None
        assert last[3] == pytest.approx(last[2] - first[2])


def test_lineage_tables_are_reused_until_the_run_changes(built_lab: Lab) -> None:
    con = open_database(built_lab)
    try:
        key = con.execute("SELECT key FROM lab_cache WHERE name = 'lineage'").fetchone()
        con.execute("DELETE FROM batch_instances WHERE step = 1")  # a stale copy ...
    finally:
        con.close()
    con = open_database(built_lab)  # ... is kept, because the key still matches
    try:
        assert con.execute("SELECT min(step) FROM batch_instances").fetchone() == (2,)
        con.execute("UPDATE lab_cache SET key = 'changed'")
    finally:
        con.close()
    con = open_database(built_lab)
    try:
        assert con.execute("SELECT min(step) FROM batch_instances").fetchone() == (1,)
        assert con.execute("SELECT key FROM lab_cache").fetchone() == key
    finally:
        con.close()


def test_missing_artifacts_name_how_to_build_them(tmp_path: Path, built_lab: Lab) -> None:
    (tmp_path / "params.yaml").write_bytes((built_lab.repo / "params.yaml").read_bytes())
    empty = Lab.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl .*step `train`.*dvc repro"):
        run_query(empty, "SELECT * FROM batch_documents")
    with pytest.raises(FileNotFoundError, match=r"lab/curated/documents .*step `mix`"):
        run_query(empty, "SELECT * FROM documents")
    with pytest.raises(ValueError, match="Parser Error"):
        run_query(empty, "SELEC 1")


def test_olmo_query_command(built_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(built_lab.repo)
    assert main(["query", "--repo", repo, "--format", "csv", "SELECT 1 AS a, 'x' AS b"]) == 0
    assert capsys.readouterr().out == "a,b\n1,x\n"
    assert main(["query", "--repo", repo, "--format", "json", "SELECT 2 AS n"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]
    assert main(["query", "--repo", repo, "--tables"]) == 0
    out = capsys.readouterr().out
    assert "batch_documents" in out and "source_share_by_checkpoint" in out
    assert main(["query", "--repo", repo, "SELECT count(*) AS n FROM evaluation"]) == 0
    (count,) = _rows(built_lab, "SELECT count(*) FROM evaluation")[0]
    assert re.search(rf"│\s+{count}\s+│", capsys.readouterr().out)
    assert main(["query", "--repo", repo, "SELECT * FROM no_such_view"]) == 2
    assert "no_such_view" in capsys.readouterr().err


# -- the query cannot write ----------------------------------------------------------------------


@pytest.fixture
def small_lab(tmp_path: Path) -> Lab:
    """A lab with nothing built but one curated documents file (no session-built lab needed)."""
    repo = tmp_path / "repo"
    part = repo / "lab" / "curated" / "documents" / "code" / "00000" / "part-00000.jsonl.gz"
    part.parent.mkdir(parents=True)
    part.write_bytes(gzip.compress(b'{"id": "a", "text": "x", "source": "code"}\n', mtime=0))
    (repo / "params.yaml").write_bytes((Path(__file__).parents[3] / "params.yaml").read_bytes())
    return Lab.load(repo)


READ_ONLY = (
    "olmo query runs read-only SQL (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE): "
    "{kind} is refused; to save a result, pass --export FILE"
)


def _query(lab: Lab, sql: str, *extra: str) -> int:
    return main(["query", "--repo", str(lab.repo), *extra, sql])


def test_query_cannot_overwrite_lab_files(
    small_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    part = small_lab.curated / "documents" / "code" / "00000" / "part-00000.jsonl.gz"
    before = part.read_bytes()
    assert _query(small_lab, "SELECT count(*) AS n FROM documents", "--format", "csv") == 0
    assert capsys.readouterr().out == "n\n1\n"
    assert _query(small_lab, f"COPY (SELECT 42 AS id) TO '{part}' (FORMAT json)") == 2
    assert READ_ONLY.format(kind="COPY") in capsys.readouterr().err
    folder = part.parent
    sql = f"COPY (SELECT 1 AS a, 2 AS b) TO '{folder}' (FORMAT csv, PARTITION_BY (a), OVERWRITE)"
    assert _query(small_lab, sql) == 2
    assert READ_ONLY.format(kind="COPY") in capsys.readouterr().err
    # Hidden after a harmless statement, or in EXPORT DATABASE: the same.
    assert _query(small_lab, f"SELECT 1; COPY (SELECT 1) TO '{part}'") == 2
    assert _query(small_lab, f"EXPORT DATABASE '{small_lab.root}'") == 2
    assert READ_ONLY.format(kind="EXPORT") in capsys.readouterr().err
    assert part.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.jsonl.gz"]


def test_query_cannot_reach_outside_the_lab(
    small_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.duckdb"
    assert _query(small_lab, f"ATTACH '{other}' AS other") == 2
    assert READ_ONLY.format(kind="ATTACH") in capsys.readouterr().err
    assert not other.exists()
    assert _query(small_lab, "SELECT content FROM read_text('/etc/hostname')") == 2
    assert capsys.readouterr().err == (
        'olmo query: error: Permission Error: Cannot access file "/etc/hostname" - file system '
        f"operations are disabled by configuration (olmo query reads files under {small_lab.root} "
        "only)\n"
    )
    escape = f"{small_lab.root}/../../../../../etc/hostname"
    assert _query(small_lab, f"SELECT content FROM read_text('{escape}')") == 2
    assert "Cannot access file" in capsys.readouterr().err
    for sql in ("SET enable_external_access = true", "INSTALL httpfs", "CREATE TABLE t (a INT)"):
        assert _query(small_lab, sql) == 2
    with pytest.raises(ValueError, match=re.escape(READ_ONLY.format(kind="CREATE"))):
        run_query(small_lab, "CREATE TEMP TABLE t AS SELECT 1")


def test_query_export_writes_one_named_file(
    small_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    sql = "SELECT id, source FROM documents"
    target = tmp_path / "out" / "docs.parquet"
    assert _query(small_lab, sql, "--export", str(target)) == 0
    assert capsys.readouterr().out == f"wrote 1 rows to {target}\n"
    assert pq.read_table(target).to_pylist() == [{"id": "a", "source": "code"}]
    assert _query(small_lab, sql, "--export", str(tmp_path / "docs.csv")) == 0
    assert (tmp_path / "docs.csv").read_text(encoding="utf-8") == '"id","source"\n"a","code"\n'
    assert _query(small_lab, sql, "--export", str(tmp_path / "docs.json")) == 0
    assert json.loads((tmp_path / "docs.json").read_text()) == [{"id": "a", "source": "code"}]
    inside = small_lab.curated / "documents" / "code" / "00000" / "part-00000.jsonl.gz"
    before = inside.read_bytes()
    for path in (
        inside,
        small_lab.root / "export.parquet",
        small_lab.root / ".." / "lab" / "x.csv",
    ):
        assert _query(small_lab, sql, "--export", str(path)) == 2
        assert (
            f"--export {path}: inside the lab's artifacts ({small_lab.root}); "
            "write the export elsewhere"
        ) in capsys.readouterr().err
    assert inside.read_bytes() == before
    assert _query(small_lab, sql, "--export", str(tmp_path / "docs.txt")) == 2
    assert (
        f"--export {tmp_path / 'docs.txt'}: the file name must end in .parquet, .csv or .json"
    ) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("COPY (SELECT 1) TO 'x.csv'", "COPY"),
        ("SELECT 1; COPY (SELECT 1) TO 'x.csv'", "COPY"),
        ("ATTACH 'other.duckdb'", "ATTACH"),
        ("EXPORT DATABASE 'out'", "EXPORT"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("DELETE FROM t", "DELETE"),
        ("DROP TABLE t", "DROP"),
        ("SET threads = 1", "SET"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA version", "PRAGMA"),
        ("CHECKPOINT", "CALL"),
        ("VACUUM", "VACUUM"),
    ],
)
def test_only_queries_run(sql: str, kind: str) -> None:
    """The statement filter itself, on a plain connection (no settings to lean on)."""
    import duckdb

    from olmo_assets.lab.query import read_only_sql

    con = duckdb.connect()
    with pytest.raises(ValueError) as refused:
        read_only_sql(con, sql)
    assert str(refused.value) == (
        "olmo query runs read-only SQL (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, "
        f"SUMMARIZE): {kind} is refused; to save a result, pass --export FILE"
    )


@pytest.mark.parametrize(
    "sql", ["SELECT 1 AS x", "WITH a AS (SELECT 1 AS x) SELECT * FROM a", "VALUES (1)", "FROM (SELECT 1 AS x)", "SELECT 0; SELECT 1 AS x"]
)  # fmt: skip
def test_queries_return_their_rows(sql: str) -> None:
    import duckdb

    from olmo_assets.lab.query import read_only_sql

    relation = read_only_sql(duckdb.connect(), sql)
    assert relation is not None and relation.fetchall() == [(1,)]


def test_a_cut_off_last_metrics_line_is_skipped(built_lab: Lab, tmp_path: Path) -> None:
    """As resume repairs it: the rows before the torn line are there, the torn one is not."""
    from olmo_assets.lab.query import read_only_sql, session

    lab = Lab(tmp_path, built_lab.params, built_lab.values)
    lab.run_dir.mkdir(parents=True)
    lines = (built_lab.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    torn = "\n".join(lines) + "\n" + lines[-1][: len(lines[-1]) // 2]
    (lab.run_dir / "metrics.jsonl").write_text(torn, encoding="utf-8")
    with session(lab) as con:
        relation = read_only_sql(con, "SELECT count(*) FROM training_metrics")
        assert relation is not None and relation.fetchall() == [(len(lines),)]
