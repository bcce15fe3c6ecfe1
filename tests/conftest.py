"""Shared fixtures: deterministic seeds, CPU by default; GPU tests skip themselves."""

from __future__ import annotations

import pytest
import torch

#: Modules sharing a session resource that only one process may start (a second Slurm
#: cluster would collide on munged; a second PostgreSQL server is minutes for nothing): under
#: ``make test`` (``-n 2 --dist loadgroup``) each group runs on one xdist worker.
SHARED_RESOURCE_MODULES = {
    "tests/test_slurm_cluster.py": "slurm",
    "tests/olmo_assets/lab/test_slurm.py": "slurm",
    "tests/olmo_assets/defs/test_slurm_training.py": "slurm",
    "tests/olmo_assets/lab/test_database.py": "postgres",
}
_RESOURCE_FIXTURES = {"slurm_cluster": "slurm", "postgres_server": "postgres"}
#: The groups that take minutes (``--durations``), handed out first so that no worker is left
#: with one of them at the end; the rest follow in collection order.
HEAVY_GROUPS = (
    "tests/olmo_assets/defs/test_two_entry_points.py",
    "tests/olmo_assets/defs/test_own_corpus.py",
    "slurm",
    "postgres",
    "tests/olmo_assets/lab/test_continuous_evaluation.py",
)


def xdist_group(nodeid: str) -> str:
    """The group a test runs in on one worker: its module (whose module fixtures are then set
    up once), or the shared resource its module uses."""
    module = nodeid.split("::")[0]
    return SHARED_RESOURCE_MODULES.get(module, module)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadgroup`` by :func:`xdist_group` (xdist's own reads ``xdist_group`` marks
    into node ids, which pytest 9 no longer lets a plugin rewrite)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return ByGroup(config, log)  # type: ignore[arg-type]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, group in _RESOURCE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and xdist_group(item.nodeid) != group:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {fixture}: add its module to SHARED_RESOURCE_MODULES "
                    f"in tests/conftest.py (group {group!r}) so that one worker starts it"
                )
    rank = {group: i for i, group in enumerate(HEAVY_GROUPS)}
    items.sort(key=lambda item: rank.get(xdist_group(item.nodeid), len(rank)))
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
