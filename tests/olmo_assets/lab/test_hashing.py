"""``dvc_md5`` gives the hashes DVC itself writes into ``dvc.lock``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from olmo_assets.lab.hashing import dvc_md5, file_md5, find_dvc_root

REPO = Path(__file__).resolve().parents[3]


def dvc_executable() -> str:
    """``dvc`` on PATH (the Makefile puts .venv-dvc/bin there), else the repository's."""
    found = shutil.which("dvc") or REPO / ".venv-dvc" / "bin" / "dvc"
    if not Path(found).is_file():
        pytest.fail("dvc is not installed: `make install` creates .venv-dvc with it")
    return str(found)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_file_hash_is_md5_of_the_bytes_without_line_ending_normalization(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", b"hello\n")
    _write(tmp_path / "b.txt", b"world\r\n")
    assert file_md5(tmp_path / "a.txt") == "b1946ac92492d2347c6235b4d2611184"
    assert dvc_md5(tmp_path / "b.txt") == "2d0ad13571bf807a3bdcfacc0d5d65f1"


def test_folder_hash_is_md5_of_its_sorted_listing(tmp_path: Path) -> None:
    # What `dvc add` records for this folder (DVC 3.67).
    _write(tmp_path / "d" / "sub" / "b.txt", b"world\r\n")
    _write(tmp_path / "d" / "a.txt", b"hello\n")
    (tmp_path / "d" / "empty").mkdir()
    assert dvc_md5(tmp_path / "d") == "28994df71f7bf0a12c1339ea7de537e9.dir"


def test_ignored_files_take_no_part(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvcignore").write_text("__pycache__/\n*.log\n!keep.log\n/lab/out/scratch/\n")
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / ".dvcignore").write_text("*.tmp\n")
    folder = tmp_path / "lab" / "out"
    _write(folder / "a.txt", b"a")
    _write(folder / "keep.log", b"kept")
    plain = dvc_md5(folder)
    _write(folder / "__pycache__" / "m.cpython-311.pyc", b"\0")
    _write(folder / "deep" / "x.log", b"ignored")
    _write(folder / "deep" / "y.tmp", b"ignored by lab/.dvcignore")
    _write(folder / "scratch" / "z.txt", b"ignored by an anchored pattern")
    _write(folder / ".git" / "HEAD", b"ref")
    assert dvc_md5(folder) == plain
    _write(folder / "deep" / "scratch" / "z.txt", b"not anchored there")
    assert dvc_md5(folder) != plain
    assert find_dvc_root(folder / "deep") == tmp_path


def test_dvcignore_inside_a_hashed_folder_is_refused_as_dvc_does(tmp_path: Path) -> None:
    _write(tmp_path / "out" / ".dvcignore", b"*.tmp\n")
    with pytest.raises(ValueError, match="refuses"):
        dvc_md5(tmp_path / "out")


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing to hash"):
        dvc_md5(tmp_path / "absent")


def test_hashes_equal_what_dvc_writes_into_dvc_lock(tmp_path: Path) -> None:
    """A stage whose dependencies and outputs hold ignored files, CRLF text, non-ASCII
    names and empty folders; every hash in its dvc.lock is ``dvc_md5``'s."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = dvc_executable()
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / ".dvcignore").write_text(
        "__pycache__/\n*.log\n!keep.log\n/data/skipped/\n/data/sub/*.tmp\n"
    )
    data = tmp_path / "data"
    _write(data / "a.txt", b"line\r\nline\r\n")
    _write(data / "keep.log", b"kept")
    _write(data / "noise.log", b"ignored")
    _write(data / "__pycache__" / "m.pyc", b"\0\1")
    _write(data / "skipped" / "big.bin", os.urandom(64))
    _write(data / "sub" / "é ü.json", b'{"x": 1}')
    _write(data / "sub" / "deeper" / "b.bin", bytes(range(256)) * 5000)
    # Ignored in data/sub, but not in its copy: the pattern is anchored to data/.
    _write(data / "sub" / "scratch.tmp", b"ignored below data/sub")
    (data / "empty").mkdir()
    _write(tmp_path / "single.txt", b"one file\n")
    copy = (
        "import shutil; shutil.copytree('data', 'copied'); shutil.copy('single.txt', 'copied.txt')"
    )
    stage = {
        "cmd": f'"{sys.executable}" -c "{copy}"',
        "deps": ["data", "single.txt"],
        "outs": ["copied", "copied.txt"],
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"copy": stage}}))
    subprocess.run([dvc, "repro", "-q"], cwd=tmp_path, env=env, check=True)
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["copy"]
    entries = lock["deps"] + lock["outs"]
    assert len(entries) == 4
    for entry in entries:
        assert dvc_md5(tmp_path / entry["path"]) == entry["md5"], entry["path"]
