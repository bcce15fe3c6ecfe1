"""What's-In-My-Big-Data-style report over a curation output folder, with DuckDB.

Tables: documents and bytes per source and stage, removal per filter, quarantine per reason,
length distribution, top domains and TLDs, exact-duplicate rate, PII counts, language
distribution, contamination rate and top words of the kept text. Written as
``report/tables.json`` and one ``report/<table>.parquet`` each (machines), printed on the
console (people), and drawn as PNG plots
in ``report/`` (people who would rather look).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

__all__ = ["build_report", "print_report"]


def _glob(root: Path, *parts: str) -> str | None:
    pattern = root.joinpath(*parts)
    return str(pattern) if list(root.glob(str(Path(*parts)))) else None


def _rows(connection: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result = connection.execute(sql)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _attribute_view(connection: duckdb.DuckDBPyConnection, root: Path, tagger: str) -> bool:
    files = _glob(root, "attributes", tagger, "*", "*.parquet")
    if files is None:
        return False
    connection.execute(
        f"CREATE VIEW {tagger} AS SELECT * FROM read_parquet('{files}', union_by_name=true, filename=true)"
    )
    return True


def build_report(
    output: str | Path, *, top: int = 20, destination: str | Path | None = None
) -> dict[str, Any]:
    """Compute the report tables of a curation output folder and write them into
    ``destination`` (default: the folder's ``report/``)."""
    root = Path(output)
    summary = json.loads((root / "report.json").read_text(encoding="utf-8"))
    connection = duckdb.connect()
    tables: dict[str, Any] = {"accounting": summary}
    stages = [
        {
            "source": source,
            "stage": "input",
            "documents": c["input_records"],
            "bytes": c["input_bytes"],
        }
        for source, c in summary["sources"].items()
    ]
    for source, counts in summary["sources"].items():
        stages.append(
            {
                "source": source,
                "stage": "kept",
                "documents": counts["kept"],
                "bytes": counts["kept_bytes"],
            }
        )
        for stage, number in counts["removed_by_stage"].items():
            stages.append(
                {"source": source, "stage": f"removed:{stage}", "documents": number, "bytes": None}
            )
        stages.append(
            {
                "source": source,
                "stage": "quarantined",
                "documents": counts["quarantined"],
                "bytes": None,
            }
        )
    tables["documents_per_source_and_stage"] = stages
    for shards, per_source in summary.get("tokens", {}).items():
        tables[f"tokens_per_source_{shards}"] = [
            {"source": source, "tokens": tokens} for source, tokens in per_source.items()
        ]
    removed = _glob(root, "removed", "*", "*.parquet")
    if removed:
        tables["removal_per_filter"] = _rows(
            connection,
            f"SELECT source, stage, reason, count(*) AS documents FROM read_parquet('{removed}') "
            "GROUP BY ALL ORDER BY documents DESC, source, stage, reason",
        )
    quarantine = _glob(root, "quarantine", "*", "*.parquet")
    if quarantine:
        tables["quarantine_per_error"] = _rows(
            connection,
            f"SELECT source, error, count(*) AS records FROM read_parquet('{quarantine}') "
            f"GROUP BY ALL ORDER BY records DESC LIMIT {top}",
        )
    if _attribute_view(connection, root, "length"):
        tables["length_histogram"] = _rows(
            connection,
            "SELECT floor(log10(greatest(length__chars, 1)) * 4) / 4 AS log10_chars, count(*) AS documents "
            "FROM length GROUP BY ALL ORDER BY log10_chars",
        )
    if _attribute_view(connection, root, "language"):
        tables["language_distribution"] = _rows(
            connection,
            "SELECT language__top_language AS language, count(*) AS documents FROM language "
            f"GROUP BY ALL ORDER BY documents DESC LIMIT {top}",
        )
    if _attribute_view(connection, root, "pii"):
        columns = [r["column_name"] for r in _rows(connection, "DESCRIBE pii")]
        counts = [c for c in columns if c.endswith("_count")]
        if counts:
            tables["pii_counts"] = _rows(
                connection, "SELECT " + ", ".join(f"sum({c}) AS {c}" for c in counts) + " FROM pii"
            )
    if _attribute_view(connection, root, "dedup"):
        columns = [r["column_name"] for r in _rows(connection, "DESCRIBE dedup")]
        parts = [
            f"avg(CAST({c} AS DOUBLE)) AS {c}_rate"
            for c in ("dedup__text_duplicate", "dedup__url_duplicate")
            if c in columns
        ]
        if "dedup__fraction_of_paragraphs_duplicate" in columns:
            parts.append(
                "avg(dedup__fraction_of_paragraphs_duplicate) AS mean_fraction_of_paragraphs_duplicate"
            )
        if parts:
            tables["duplicate_rates"] = _rows(
                connection, "SELECT " + ", ".join(parts) + " FROM dedup"
            )
    if _attribute_view(connection, root, "decontam"):
        tables["contamination_rate"] = _rows(
            connection,
            "SELECT avg(CAST(decontam__is_contaminated AS DOUBLE)) AS rate, count(*) AS documents FROM decontam",
        )
    # documents/<source>/ or, kept per input folder, documents/<source>/<folder>/
    documents = _glob(root, "documents", "**", "*.jsonl.gz")
    if documents:
        reader = f"read_json('{documents}', columns={{id: 'VARCHAR', text: 'VARCHAR', source: 'VARCHAR', metadata: 'JSON'}})"
        tables["top_domains"] = _rows(
            connection,
            f"SELECT regexp_extract(json_extract_string(metadata, '$.url'), '^[a-z]+://([^/:]+)', 1) AS domain, "
            f"count(*) AS documents FROM {reader} WHERE json_extract_string(metadata, '$.url') IS NOT NULL "
            f"GROUP BY ALL ORDER BY documents DESC LIMIT {top}",
        )
        tables["top_tlds"] = _rows(
            connection,
            f"SELECT regexp_extract(json_extract_string(metadata, '$.url'), '^[a-z]+://[^/:]*\\.([a-z0-9-]+)(?:[:/]|$)', 1) AS tld, "
            f"count(*) AS documents FROM {reader} WHERE json_extract_string(metadata, '$.url') IS NOT NULL "
            f"GROUP BY ALL ORDER BY documents DESC LIMIT {top}",
        )
        tables["top_bigrams"] = _rows(
            connection,
            f"WITH words AS (SELECT regexp_split_to_array(lower(text), '[^a-z]+') AS w FROM "
            f"(SELECT text FROM {reader} LIMIT 5000)), pairs AS (SELECT w[i] || ' ' || w[i + 1] AS bigram "
            f"FROM words, range(1, len(w)) t(i) WHERE length(w[i]) > 2 AND length(w[i + 1]) > 2) "
            f"SELECT bigram, count(*) AS occurrences FROM pairs GROUP BY ALL "
            f"ORDER BY occurrences DESC, bigram LIMIT {top}",
        )
        tables["top_words"] = _rows(
            connection,
            f"SELECT word, count(*) AS occurrences FROM (SELECT unnest(regexp_split_to_array(lower(text), '[^a-z]+')) AS word "
            f"FROM (SELECT text FROM {reader} LIMIT 5000)) WHERE length(word) > 2 "
            f"GROUP BY ALL ORDER BY occurrences DESC, word LIMIT {top}",
        )
    connection.close()
    folder = Path(destination) if destination is not None else root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tables.json").write_text(
        json.dumps(tables, indent=2, default=str) + "\n", encoding="utf-8"
    )
    for name, rows in tables.items():
        if isinstance(rows, list) and rows:
            pl.DataFrame(rows, infer_schema_length=None).write_parquet(folder / f"{name}.parquet")
    _plot(tables, folder)
    return tables


def _bar_chart(
    path: Path, x: list[Any], y: list[Any], *, title: str, xlabel: str = "", width: float = 0.8
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(v) for v in x] if any(isinstance(v, str) for v in x) else None
    fig, ax = plt.subplots(figsize=(max(7.0, 0.35 * len(x)), 4), dpi=110)
    ax.bar(range(len(x)) if labels else x, y, width=width)
    if labels:
        ax.set_xticks(range(len(x)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("documents")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot(tables: dict[str, Any], folder: Path) -> None:
    stages = [r for r in tables["documents_per_source_and_stage"] if r["stage"] != "input"]
    if stages:
        _bar_chart(folder / "stages.png", [f"{r['source']}\n{r['stage']}" for r in stages],
                   [r["documents"] for r in stages], title="where each input document ended")  # fmt: skip
    if histogram := tables.get("length_histogram"):
        _bar_chart(folder / "lengths.png", [r["log10_chars"] for r in histogram],
                   [r["documents"] for r in histogram], title="document length",
                   xlabel="log10(characters)", width=0.22)  # fmt: skip
    if languages := tables.get("language_distribution"):
        _bar_chart(folder / "languages.png", [r["language"] for r in languages],
                   [r["documents"] for r in languages], title="top language")  # fmt: skip


def print_report(tables: dict[str, Any]) -> None:
    """The tables as aligned text on the console."""
    for name, rows in tables.items():
        if name == "accounting" or not rows:
            continue
        print(f"\n{name}")
        columns = list(rows[0])
        widths = [max(len(str(c)), *(len(_cell(r[c])) for r in rows)) for c in columns]
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in rows:
            print(
                "  "
                + "  ".join(_cell(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True))
            )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
