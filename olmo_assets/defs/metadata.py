"""The metadata a materialization carries, in Dagster Pipes' wire format.

One builder serves both entry points: under Pipes the entries go to
``report_asset_materialization`` as they are; outside Pipes :func:`to_dagster` turns them into
Dagster's ``MetadataValue`` objects for the run that replays the stage's outcome. Either way
the UI shows the same numbers, tables (every column), plots in place, provenance links and
inputs, content hash, git commit and command.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olmo_assets.lab import links
from olmo_assets.lab.database import redacted
from olmo_assets.lab.git import code_commit
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.results import CheckResult, StepResult

__all__ = [
    "LAUNCHERS",
    "MAX_EMBEDDED_IMAGE_BYTES",
    "Input",
    "artifact_metadata",
    "check_metadata",
    "git_metadata",
    "plot_metadata",
    "provenance_metadata",
    "to_dagster",
]

Entries = dict[str, dict[str, Any]]
"""Metadata in Pipes' format: ``{key: {"raw_value": value, "type": type}}``."""

# Plots larger than this are shown by path only (they would bloat the event log).
MAX_EMBEDDED_IMAGE_BYTES = 1 << 20
# A plot's preview on an asset page: narrower than the metadata's value column on an asset's
# overview in a 1400-pixel-wide window (the browser test checks none is cut off).
PREVIEW_WIDTH = 340


def _entry(value: Any, kind: str = "__infer__") -> dict[str, Any]:
    return {"raw_value": value, "type": kind}


def _plain(value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        # Shown to people: six significant digits (the files keep full precision).
        return _entry(float(f"{value:.6g}"))
    if isinstance(value, dict | list | tuple):
        return _entry(value if isinstance(value, dict) else list(value), "json")
    if isinstance(value, Path):
        return _entry(str(value), "path")
    if value is None:
        return _entry(None, "null")
    return _entry(value)


def _column_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def _cell(value: Any) -> Any:
    """A value as a table cell: scalars as they are (floats to six digits), a list or a
    mapping as JSON, anything else as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def table_entry(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows as Dagster table metadata: every column (the union of the rows' keys, in
    first-seen order), typed from its values; a missing cell is null."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    schema = [
        {"name": name, "type": _column_type([row.get(name) for row in rows])} for name in columns
    ]
    records = [{name: _cell(row.get(name)) for name in columns} for row in rows]
    return _entry({"records": records, "schema": schema}, "table")


def git_metadata() -> Entries:
    """The commit of the code that ran (and whether tracked files had changes), if in git."""
    found = code_commit()
    if found is None:
        return {}
    return {"git_commit": _entry(found[0], "text"), "git_dirty": _entry(found[1])}


def _folder_stats(folder: Path) -> Entries:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else [folder]
    return {
        "num_files": _entry(len(files), "int"),
        "num_bytes": _entry(sum(p.stat().st_size for p in files), "int"),
    }


def _shown(lab: Lab, path: Path) -> str:
    """A path as the UI shows it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(lab.repo).as_posix()
    except ValueError:
        return str(path)


def _preview(path: Path, folder: Path) -> Path:
    """``path`` scaled down to :data:`PREVIEW_WIDTH` pixels wide (as is, if narrower)."""
    from PIL import Image

    preview = folder / f"{path.stem}.preview.png"
    with Image.open(path) as image:
        width = min(image.width, PREVIEW_WIDTH)
        height = round(image.height * width / image.width)
        image.resize((width, height), Image.Resampling.LANCZOS).save(preview, optimize=True)
    return preview


def _image(lab: Lab, name: str, path: Path, run_id: str | None) -> Entries:
    """A plot shown on the asset page: a short Markdown image whose URL is an MLflow artifact
    (Dagster renders Markdown under 1,000 characters in place; a longer one, such as an
    embedded PNG, only behind "Show Markdown"). The image is a preview that fits the page's
    metadata column, linked to the full-size plot. Without an MLflow run, it is embedded."""
    from olmo_assets.lab.tracking import log_plot

    entries = {f"{name}_plot_path": _entry(_shown(lab, path), "path")}
    if not path.is_file():
        return entries
    if run_id:
        full = links.mlflow_artifact_url(run_id, log_plot(lab, run_id, path))
        with tempfile.TemporaryDirectory() as scratch:
            preview = log_plot(lab, run_id, _preview(path, Path(scratch)))
        shown = f"[![{name}]({links.mlflow_artifact_url(run_id, preview)})]({full})"
        entries[f"{name}_plot"] = _entry(shown, "md")
    elif path.stat().st_size <= MAX_EMBEDDED_IMAGE_BYTES:
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        entries[f"{name}_plot"] = _entry(f"![{name}](data:image/png;base64,{encoded})", "md")
    return entries


@dataclass(frozen=True)
class Input:
    """One artifact (partition) a stage run read, and its data version when recorded."""

    asset_path: tuple[str, ...]
    partition: str | None
    data_version: str

    @property
    def asset(self) -> str:
        return "/".join(self.asset_path)

    @property
    def url(self) -> str:
        return links.dagster_asset_url(self.asset_path, self.partition)


def provenance_metadata(inputs: list[Input]) -> Entries:
    """Where a materialization came from: a link per upstream asset (to the partition read,
    or to the asset when it read many of its partitions) and a table of every input with the
    data version it had (DVC's content hash: the upstream materialization's data version)."""
    entries: Entries = {}
    by_asset: dict[tuple[str, ...], list[Input]] = {}
    for item in inputs:
        by_asset.setdefault(item.asset_path, []).append(item)
    for path, items in by_asset.items():
        one = items[0] if len(items) == 1 else None
        url = one.url if one else links.dagster_asset_url(path)
        entries[f"upstream/{'/'.join(path)}"] = _entry(url, "url")
    if inputs:
        entries["inputs"] = table_entry(
            [
                {"asset": i.asset, "partition": i.partition, "data_version": i.data_version}
                for i in inputs
            ]
        )
    return entries


def plot_metadata(lab: Lab, result: StepResult) -> Entries:
    """The step's plots, each shown in place (see :func:`_image`)."""
    run_id = result.metadata.get("mlflow_run_id") or None
    entries: Entries = {}
    for name, path in result.images.items():
        entries |= _image(lab, name, path, run_id)
    return entries


LAUNCHERS = {
    "dagster": "Dagster: this run ran the step (through Pipes) and committed it to DVC",
    "dvc": "dvc repro: DVC ran the step and recorded it in dvc.lock; this run only records it",
    "shell": "a shell: the stage command ran the step, committed it to DVC and recorded it here",
}
"""Who ran a stage (``launched_by``), as a materialization says it."""


def artifact_metadata(
    lab: Lab,
    *,
    folder: Path,
    data_version: str,
    result: StepResult,
    primary: bool,
    command: str,
    seconds: float,
    git: Entries,
    inputs: list[Input],
    launched_by: str,
    plots: Entries,
) -> Entries:
    """Everything shown on one materialization. The step's own numbers, tables and plots go
    on its primary artifact; every artifact gets its provenance (links to what it read, with
    their data versions), folder, content hash, size and origin."""
    entries: Entries = {"launched_by": _entry(LAUNCHERS[launched_by], "text")}
    run_id = result.metadata.get("mlflow_run_id")
    if primary:
        _no_clash(result.metadata, result.tables)
        entries |= {key: _plain(value) for key, value in result.metadata.items()}
        entries |= {name: table_entry(rows) for name, rows in result.tables.items()}
        entries |= plots
    if primary and run_id:
        from olmo_assets.lab.tracking import experiment_id

        entries["mlflow_run"] = _entry(links.mlflow_run_url(experiment_id(lab), run_id), "url")
        # A database URL's password stays out of the metadata.
        entries["mlflow_tracking_uri"] = _entry(redacted(lab.mlflow_uri), "text")
        entries["mlflow_experiment"] = _entry(lab.mlflow_experiment, "text")
    entries |= provenance_metadata(inputs)
    entries |= {
        "path": _entry(_shown(lab, folder), "path"),
        "dvc_md5": _entry(data_version, "text"),
        **_folder_stats(folder),
        "command": _entry(command, "text"),
        "seconds": _entry(round(seconds, 3), "float"),
        **git,
    }
    return entries


def _no_clash(numbers: dict[str, Any], tables: dict[str, Any]) -> None:
    """A number and a table of one name would hide one another: a bug in the step."""
    clash = set(numbers) & set(tables)
    if clash:
        raise ValueError(f"a step or check named a number and a table alike: {sorted(clash)}")


def check_metadata(check: CheckResult, description: str, partition: str | None) -> Entries:
    _no_clash(check.metadata, check.tables)
    entries = {key: _plain(value) for key, value in check.metadata.items()}
    entries |= {name: table_entry(rows) for name, rows in check.tables.items()}
    entries["description"] = _entry(description, "text")
    if partition is not None:
        entries["partition"] = _entry(partition, "text")
    return entries


def to_dagster(entries: Entries) -> dict[str, Any]:
    """Pipes-format entries as Dagster metadata values (for events recorded outside Pipes)."""
    from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

    def table(value: dict[str, Any]) -> Any:
        return MetadataValue.table(
            [TableRecord(record) for record in value["records"]],
            TableSchema([TableColumn(c["name"], c["type"]) for c in value["schema"]]),
        )

    converters: dict[str, Callable[[Any], Any]] = {
        "table": table,
        "md": MetadataValue.md,
        "path": MetadataValue.path,
        "json": MetadataValue.json,
        "text": MetadataValue.text,
        "url": MetadataValue.url,
        "null": lambda _value: MetadataValue.null(),
    }
    values: dict[str, Any] = {}
    for key, entry in entries.items():
        convert = converters.get(entry["type"])
        values[key] = convert(entry["raw_value"]) if convert else entry["raw_value"]
    return values
