"""What the tests hold a lab's recorded lineage to, read back from the Dagster instance and
the webserver's GraphQL API (not from the code that wrote it):

* :func:`provenance_mismatches`: for every materialization of every stage run and every asset
  it depends on in Dagster's own graph, the data version Dagster recorded for that input
  (``dagster/input_data_version/<key>``) agrees with the upstream's latest materialization,
  and so does the ``inputs`` table the lab wrote: an unpartitioned input's version is the
  upstream's; a partitioned input's is Dagster's hash over the partitions read (sha256 of
  their data versions joined in partition-key order), each of which is that partition's.
* :func:`unresolved_links`: every Dagster URL in the metadata names an asset (and partition)
  that the webserver shows a materialization for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .webserver import graphql

ASSET_MATERIALIZATIONS = """
query Materializations($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions, limit: 1) { runId partition } }
  }
}
"""
INPUT_TAG = "dagster/input_data_version/"
DATA_VERSION_TAG = "dagster/data_version"


def _records(repo: Path) -> dict[tuple[str, str | None], Any]:
    """The latest materialization of every asset (partition) the lab's pipeline writes."""
    from dagster import AssetRecordsFilter, DagsterInstance

    from olmo_assets.defs.assets import asset_key
    from olmo_assets.lab.params import Lab
    from olmo_assets.lab.pipeline import STAGES, stage_runs

    lab = Lab.load(repo)
    found = {}
    with DagsterInstance.from_config(str(repo / ".dagster")) as instance:
        for stage in STAGES:
            for run in stage_runs(lab, stage):
                for artifact in stage.writes:
                    key = asset_key(artifact, run.keys.get("source"))
                    records = instance.fetch_materializations(
                        AssetRecordsFilter(
                            asset_key=key,
                            asset_partitions=[run.partition] if run.partition else None,
                        ),
                        limit=1,
                    ).records
                    assert records, f"no materialization of {key.to_user_string()}"
                    found[key.to_user_string(), run.partition] = records[0].asset_materialization
    return found


def provenance_mismatches(repo: Path) -> tuple[int, list[str]]:
    """The number of edges checked, and what disagrees (empty when everything does)."""
    records = _records(repo)
    version = {key: event.tags[DATA_VERSION_TAG] for key, event in records.items()}
    problems: list[str] = []
    edges = 0
    for (asset, partition), event in records.items():
        where = f"{asset}[{partition}]" if partition else asset
        table = event.metadata.get("inputs")
        recorded: dict[str, dict[str | None, str]] = {}
        for row in table.value.records if table is not None else []:
            recorded.setdefault(row.data["asset"], {})[row.data["partition"]] = row.data[
                "data_version"
            ]
        dagster_inputs = {
            tag[len(INPUT_TAG) :]: value
            for tag, value in event.tags.items()
            if tag.startswith(INPUT_TAG)
        }
        if set(dagster_inputs) != set(recorded):
            problems.append(f"{where}: Dagster's inputs {sorted(dagster_inputs)} vs {recorded}")
            continue
        for upstream, tag_value in dagster_inputs.items():
            edges += 1
            partitions = recorded[upstream]
            for read, data_version in partitions.items():
                if version.get((upstream, read)) != data_version:
                    problems.append(
                        f"{where}: read {upstream}[{read}] at {data_version}, its latest "
                        f"materialization is {version.get((upstream, read))}"
                    )
            if list(partitions) == [None]:
                expected = partitions[None]
            else:
                joined = "".join(partitions[p] for p in sorted(p for p in partitions if p))
                expected = hashlib.sha256(joined.encode()).hexdigest()
            if tag_value != expected:
                problems.append(
                    f"{where}: Dagster recorded {upstream} at {tag_value}, not {expected}"
                )
    return edges, problems


def unresolved_links(repo: Path, graphql_url: str, dagster_url: str) -> tuple[int, list[str]]:
    """Every URL entry under ``dagster_url`` in the latest materializations, asked of the
    webserver: the number checked and those naming nothing materialized."""
    checked, problems = 0, []
    for (asset, partition), event in _records(repo).items():
        for label, entry in event.metadata.items():
            url = getattr(entry, "url", None)
            if not isinstance(url, str) or not url.startswith(dagster_url):
                continue
            checked += 1
            parts = urlsplit(url)
            assert parts.path.startswith("/assets/"), url
            path = [unquote(p) for p in parts.path[len("/assets/") :].split("/")]
            wanted = parse_qs(parts.query).get("partition")
            found = graphql(
                graphql_url, ASSET_MATERIALIZATIONS, {"path": path, "partitions": wanted}
            )["assetOrError"]
            if found["__typename"] != "Asset" or not found["assetMaterializations"]:
                problems.append(f"{asset}[{partition}] {label}: {url} shows nothing ({found})")
    return checked, problems
