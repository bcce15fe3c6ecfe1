"""Progress of a long step, told to whoever launched it.

A step calls :func:`report` with a line ("step 100/300 …"); where the line goes is set by the
stage command: under Dagster Pipes it becomes an event in the run's log (so the UI shows
training advance), elsewhere it is printed. The steps stay free of Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["PREFIX", "report", "reporting_to"]

PREFIX = "progress: "
"""What starts a progress line in a Dagster run's event log (so a launcher can pick them out)."""

_sink: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731


def report(line: str) -> None:
    """Tell the launcher how the step is getting on."""
    _sink(line)


@contextmanager
def reporting_to(sink: Callable[[str], None]) -> Iterator[None]:
    """Send :func:`report`'s lines to ``sink`` while the block runs."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
