"""Curation is safe by default: source names never leave the output folder, a killed run's
workers die with it and its staging is removed by the next run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from olmo_assets.curation.config import CurationConfig, SourceConfig
from olmo_nn.cli.main import main
from olmo_nn.config import ConfigError

MIX = "sources: []\ntaggers: [length]\ndedup: {url: false, exact: false, paragraphs: false}\n"


def _corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "in" / "prose"
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": f"d{i}", "text": f"document number {i}"}) for i in range(5)]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _message(name: str) -> str:
    return (
        f"source name {name!r} is not allowed: use letters, digits, '_' and '-' (starting with "
        "a letter or digit), since it names a folder"
    )


@pytest.mark.parametrize("name", ["../../escaped", "..", ".", "a/b", "a\\b", ".hidden", ""])
def test_source_names_that_are_not_one_path_part_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    folder = _corpus(tmp_path)
    mix = tmp_path / "mix.yaml"
    mix.write_text(MIX, encoding="utf-8")
    out = tmp_path / "deep" / "er" / "out"
    args = ["data", "curate", "--config", str(mix), "--source", f"{name}={folder}"]
    assert main([*args, "--output", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    if name:
        assert _message(name) in err
    else:
        assert "must look like NAME=PATH_OR_GLOB" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "mix.yaml"]


def test_config_source_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        CurationConfig.from_yaml("sources:\n- {name: ../x, paths: [in]}\n")
    assert str(error.value) == _message("../x")
    with pytest.raises(ValueError, match="is not allowed"):
        SourceConfig(name="..", paths=["in"])
    assert SourceConfig(name="web-2_en", paths=["in"]).name == "web-2_en"


def test_killing_curate_kills_its_workers_and_its_staging_goes_later(tmp_path: Path) -> None:
    from tests.olmo_nn.data.test_data_cleanup import assert_gone, big_input, kill_mid_run

    mix, out = tmp_path / "mix.yaml", tmp_path / "out"
    mix.write_text(MIX, encoding="utf-8")
    command = [sys.executable, "-m", "olmo_nn.cli.main", "data", "curate", "--config", str(mix)]
    command += ["--source", f"web={big_input(tmp_path / 'big')}", "--output", str(out)]
    workers = kill_mid_run(
        [*command, "--workers", "2"],
        lambda: any(tmp_path.glob(".out.*/staged/documents/web/*.jsonl.gz")),
    )
    assert_gone(workers)
    assert [p.name for p in tmp_path.glob(".out.*")]  # the killed run's staging
    folder = _corpus(tmp_path)
    args = ["data", "curate", "--config", str(mix), "--source", f"web={folder}"]
    assert main([*args, "--output", str(out), "--workers", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "in", "mix.yaml", "out"]


# ------------------------------------------------------------------ messages, not tracebacks
def test_bad_workers_and_a_directory_config_are_refused_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _corpus(tmp_path)
    args = ["data", "curate", "--source", f"web={folder}", "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--workers", "-2"])
    assert exit_.value.code == 2
    assert "argument --workers: -2 must be at least 1" in capsys.readouterr().err
    assert main([*args, "--config", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"olmo data: error: config file {tmp_path} is a directory; give the path of a YAML file\n"
    )
    with pytest.raises(ConfigError) as error:
        CurationConfig.from_yaml("sources: []\nworkers: -2\n")
    assert str(error.value) == "workers=-2 must be at least 0 (0: one per core)"
