"""The README's speed figures are the results files' and nothing else."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


table = _load("table")

RATIO = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?[x×](?![\w])")
"""A speed ratio as prose writes one: 5.2x, 12×, 1.5 ×."""


def _block(text: str) -> str:
    start, end = text.index(table.BEGIN), text.index(table.END) + len(table.END)
    return text[start:end]


def test_the_readme_table_is_generated_from_the_results_files() -> None:
    readme = (ROOT / "README.md").read_text()
    assert _block(readme) == table.table(table.load_results()), (
        "README.md's benchmark table differs from benchmarks/results/*.json: "
        "run `.venv/bin/python benchmarks/table.py --write`"
    )


def test_every_figure_in_the_readme_table_is_in_a_results_file() -> None:
    """Each ratio and time in the table is a value some results file holds."""
    recorded: set[str] = set()
    for payload in table.load_results():
        for item in payload["rows"]:
            if item.get("ratio") is not None:
                recorded.add(f"{item['ratio']:.2f}×")
            for side in (item["ours"], item["theirs"]):
                if "seconds" in side:
                    recorded.add(f"{side['seconds']:.2f} s")
        for stage in payload.get("stages", {}).values():
            if "seconds" in stage:
                recorded.add(f"{stage['seconds']:.2f} s")
    shown = _block((ROOT / "README.md").read_text())
    for figure in re.findall(r"\d+\.\d\d(?:×| s)", shown):
        assert figure in recorded, f"README shows {figure}, which no results file holds"


def test_no_speed_ratio_outside_the_generated_table() -> None:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = []
    for path in files:
        text = path.read_text()
        if path.name == "README.md":
            text = text.replace(_block(text), "")
        for match in RATIO.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {match.group()}")
    assert not found, "speed ratios quoted outside the generated table:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("text", "ratios"),
    [
        ("5.2x and 8.1x faster", ["5.2x", "8.1x"]),
        ("12× dolma, 1.5 × at 150M", ["12×", "1.5 ×"]),
        ("4 nodes x 8 GPUs; 0x1f; d_model x vocab; 3xl; v1.2x", []),
    ],
)
def test_the_ratio_pattern(text: str, ratios: list[str]) -> None:
    assert RATIO.findall(text) == ratios


def test_a_failed_peer_and_an_unmet_goal_are_shown(tmp_path: Path) -> None:
    rows = [
        {
            "work": "w",
            "measure": "whole command",
            "peer": "dolma tag",
            "ours": {"seconds": 1.0, "failed": False, "peak_tree_rss_mb": 512.0},
            "theirs": {"failed": True, "returncode": 1, "runs_seconds": [0.5]},
            "goal": 10,
            "ratio": None,
            "met": False,
        },
        {
            "work": "v",
            "measure": "core call",
            "peer": "lm_eval",
            "ours": {"seconds": 2.0, "failed": False},
            "theirs": {"seconds": 3.0, "failed": False},
            "goal": 2,
            "ratio": 1.5,
            "met": False,
        },
    ]
    rows.append(
        {
            "work": "u",
            "measure": "whole command",
            "peer": "p",
            "ours": {"failed": True, "returncode": 2},
            "theirs": {"seconds": 3.0, "failed": False},
            "goal": None,
            "ratio": None,
            "met": None,
        }
    )
    payload = {
        "benchmark": "b",
        "command": "python benchmarks/b.py",
        "date": "2026-12-05 12:00 UTC",
        "machine": {"cpus": 2, "cpu": "cpu"},
        "rows": rows,
        "stages": {
            "tag": {"seconds": 2.0, "megabytes_per_second": 6.3},
            "mix": {"failed": True, "returncode": 3},
        },
        "stages_corpus_megabytes": 12.6,
    }
    (tmp_path / "b.json").write_text(json.dumps(payload))
    (tmp_path / "no_rows.json").write_text(json.dumps({"command": "x"}))
    block = table.table(table.load_results(tmp_path))
    assert "| b | w | whole command | 1.00 s | dolma tag | failed (exit 1) | peer failed |" in block
    assert "≥ 10× **not met** | 0.50 GB / – |" in block
    assert "| 1.50× | ≥ 2× **not met** |" in block
    assert "`benchmarks/results/b.json`" in block and "no_rows" not in block
    assert "| b | u | whole command | failed (exit 2) | p | 3.00 s | ours failed |" in block
    assert "on 12.6 MB: tag 2.00 s (6.30 MB/s), mix failed (exit 3)\n" in block


def test_a_failed_run_on_either_side_leaves_no_ratio() -> None:
    harness = _load("harness")
    ok, bad = harness.Run(seconds=1.0), harness.Run(seconds=0.5, returncode=1)
    ours = harness.Side("ours", argv=["x"], runs=[ok, bad])
    peer = harness.Side("peer", argv=["y"], runs=[harness.Run(seconds=4.0)] * 2)
    partial = harness.row(work="w", measure="whole command", ours=ours, peer=peer, goal=2)
    assert partial["ratio"] is None and partial["met"] is False
    assert partial["ours"]["failed"] and partial["ours"]["seconds"] == 1.0
    assert table._ratio(partial) == "ours failed"
    ours.runs = [ok, ok]
    whole = harness.row(work="w", measure="whole command", ours=ours, peer=peer, goal=2)
    assert whole["ratio"] == 4.0 and whole["met"] is True
