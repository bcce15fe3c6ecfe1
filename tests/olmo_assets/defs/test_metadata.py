"""What a materialization's metadata holds: plots shown in place, tables, provenance links."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from olmo_assets.defs.metadata import (
    PREVIEW_WIDTH,
    Input,
    plot_metadata,
    provenance_metadata,
    table_entry,
)
from olmo_assets.lab import links
from olmo_assets.lab.params import Lab
from olmo_assets.lab.steps.results import StepResult
from olmo_assets.lab.tracking import experiment_id


def _plot(path: Path, width_inches: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width_inches, 3))
    ax.plot([1, 2, 3], [3.0, 2.0, 1.5])
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def test_a_plot_is_a_short_markdown_preview_linked_to_the_full_plot(
    small_lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from PIL import Image

    monkeypatch.setenv(links.MLFLOW_URL_ENV, "http://127.0.0.1:5999")
    client = MlflowClient(tracking_uri=small_lab.mlflow_uri)
    run_id = client.create_run(experiment_id(small_lab)).info.run_id
    plot = _plot(tmp_path / "loss.png", 12)  # 1200 pixels wide
    result = StepResult({"mlflow_run_id": run_id}, images={"loss": plot})

    entries = plot_metadata(small_lab, result)

    shown = entries["loss_plot"]
    assert shown["type"] == "md"
    # Under Dagster's limit for Markdown rendered in place.
    assert len(shown["raw_value"]) < 1000
    match = re.fullmatch(
        r"\[!\[loss\]\((?P<preview>[^)]+)\)\]\((?P<full>[^)]+)\)", shown["raw_value"]
    )
    assert match is not None, shown["raw_value"]
    downloaded = {}
    for kind in ("preview", "full"):
        url = urlparse(match[kind])
        assert f"{url.scheme}://{url.netloc}" == "http://127.0.0.1:5999"
        assert url.path == "/get-artifact"
        query = parse_qs(url.query)
        assert query["run_uuid"] == [run_id]
        downloaded[kind] = Path(
            client.download_artifacts(run_id, query["path"][0], str(tmp_path / kind))
        )
    assert downloaded["full"].read_bytes() == plot.read_bytes()
    with Image.open(downloaded["preview"]) as preview, Image.open(plot) as original:
        assert original.width == 1200
        assert preview.width == PREVIEW_WIDTH
        assert preview.height == round(original.height * PREVIEW_WIDTH / original.width)
    assert entries["loss_plot_path"] == {"raw_value": str(plot), "type": "path"}


def test_a_plot_without_an_mlflow_run_is_embedded(small_lab: Lab, tmp_path: Path) -> None:
    plot = _plot(tmp_path / "loss.png", 4)
    entries = plot_metadata(small_lab, StepResult(images={"loss": plot}))
    assert entries["loss_plot"]["raw_value"].startswith("![loss](data:image/png;base64,")


def test_tables_keep_every_column_with_its_type() -> None:
    entry = table_entry(
        [{"source": "code", "kept": 3, "share": 0.5}, {"source": "prose", "ok": True}]
    )
    assert entry["type"] == "table"
    assert entry["raw_value"]["schema"] == [
        {"name": "source", "type": "string"},
        {"name": "kept", "type": "int"},
        {"name": "share", "type": "float"},
        {"name": "ok", "type": "bool"},
    ]
    assert entry["raw_value"]["records"] == [
        {"source": "code", "kept": 3, "share": 0.5, "ok": None},
        {"source": "prose", "kept": None, "share": None, "ok": True},
    ]


def test_provenance_links_the_partition_read_or_the_asset_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(links.DAGSTER_URL_ENV, "http://ui.example:3000")
    entries = provenance_metadata(
        [
            Input(("checkpoint",), "100", "a1"),
            Input(("downstream_eval",), "100|arc_easy", "b1"),
            Input(("downstream_eval",), "100|copa", "b2"),
            Input(("raw_source", "code"), None, "c1"),
        ]
    )
    assert entries["upstream/checkpoint"] == {
        "raw_value": "http://ui.example:3000/assets/checkpoint?view=partitions&partition=100",
        "type": "url",
    }
    assert entries["upstream/downstream_eval"]["raw_value"] == (
        "http://ui.example:3000/assets/downstream_eval"
    )
    assert entries["upstream/raw_source/code"]["raw_value"] == (
        "http://ui.example:3000/assets/raw_source/code"
    )
    assert entries["inputs"]["raw_value"]["records"] == [
        {"asset": "checkpoint", "partition": "100", "data_version": "a1"},
        {"asset": "downstream_eval", "partition": "100|arc_easy", "data_version": "b1"},
        {"asset": "downstream_eval", "partition": "100|copa", "data_version": "b2"},
        {"asset": "raw_source/code", "partition": None, "data_version": "c1"},
    ]
