"""Shared fixtures: deterministic seeds, CPU by default; GPU tests skip themselves."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def olmo_tokenizer():  # type: ignore[no-untyped-def]
    from olmo_nn.tokenizer import Tokenizer

    return Tokenizer.from_name_or_path()
