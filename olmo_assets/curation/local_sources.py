"""Real text that every machine with Python already has, as Dolma-format documents.

The lab never downloads corpora at run time, so the embedded default corpus (and the
tokenizer's parity tests and benchmark) draw on local sources:

* ``code``: the Python standard library's own source files;
* ``prose``: the Python documentation topics (``pydoc_data.topics``);
* ``markdown``: the long descriptions of the installed packages (web-like markdown / reST);
* ``multilingual``: committed samples in other languages (the first article of the Universal
  Declaration of Human Rights in 30 languages) plus CPython's CJK test texts where installed.

Each function yields dicts with ``id``, ``text``, ``source`` and ``metadata``, in a fixed,
sorted order, so the same machine always produces the same corpus.
"""

from __future__ import annotations

import email.message
import importlib.metadata
import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

__all__ = [
    "code_documents",
    "markdown_documents",
    "multilingual_documents",
    "prose_documents",
]

_SAMPLES = Path(__file__).parent / "samples"
Document = dict[str, Any]


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def code_documents(*, max_bytes: int | None = None) -> Iterator[Document]:
    """Python source files of the standard library (tests and site-packages excluded)."""
    root = _stdlib()
    total = 0
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if (
            relative.startswith(("site-packages/", "test/", "idlelib/idle_test/"))
            or "/tests/" in relative
        ):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of deliberately mis-encoded files; not documents
        if not text.strip():
            continue
        total += len(text.encode("utf-8"))
        yield {
            "id": f"stdlib/{relative}",
            "text": text,
            "source": "code",
            "metadata": {"path": relative},
        }
        if max_bytes is not None and total >= max_bytes:
            return


def prose_documents() -> Iterator[Document]:
    """The Python documentation topics (the text behind ``help('TOPIC')``)."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield {
            "id": f"pydoc/{name}",
            "text": topics[name],
            "source": "prose",
            "metadata": {"topic": name},
        }


def markdown_documents() -> Iterator[Document]:
    """Long descriptions (README markdown or reST) of the installed distributions."""
    seen: set[str] = set()
    dists = sorted(
        importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()
    )
    for dist in dists:
        metadata = cast(email.message.Message, dist.metadata)
        name = (metadata["Name"] or "").lower()
        body = metadata.get_payload()
        if not body:
            # importlib_metadata (the backport, which MLflow imports) moves the long
            # description from the payload into a "Description" field.
            body = metadata.get("Description")
        if not name or name in seen or not isinstance(body, str) or len(body.strip()) < 200:
            continue
        seen.add(name)
        content_type = metadata.get("Description-Content-Type") or "text/plain"
        yield {
            "id": f"pypi/{name}",
            "text": body,
            "source": "markdown",
            "metadata": {"package": name, "version": dist.version, "content_type": content_type},
        }


def multilingual_documents() -> Iterator[Document]:
    """Committed multilingual samples, then CPython's CJK test texts if this Python has them."""
    for path in sorted(_SAMPLES.glob("*.jsonl")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                yield {
                    "id": record["id"],
                    "text": record["text"],
                    "source": "multilingual",
                    "metadata": {"lang": record["lang"], "file": path.name},
                }
    cjk = _stdlib() / "test" / "cjkencodings"
    for path in sorted(cjk.glob("*-utf8.txt")):
        yield {
            "id": f"cpython-cjk/{path.stem}",
            "text": path.read_text(encoding="utf-8"),
            "source": "multilingual",
            "metadata": {"file": path.name},
        }
