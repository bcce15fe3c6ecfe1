"""Main-content text extraction for web sources whose documents hold raw HTML.

The curation chain works on plain text; a web source may instead store each page's HTML.
:func:`extract_text` turns one page into the text of its main content (no navigation, footer,
scripts, styles or comments) with trafilatura, one paragraph, heading or list item per line, so
line-level rules (C4's) see the page's own lines. Pages whose main content is under about 250
characters go through trafilatura's fallbacks (readability, jusText, a whole-page baseline),
which may keep a stray navigation link or return the article as one line.

Extraction never touches the network (trafilatura only downloads through ``fetch_url``, which
is not used here), and the output depends only on the page: trafilatura's cross-document
deduplication is off, since it keeps a process-wide cache and would make a page's text depend
on the pages seen before it (deduplication is the chain's own stage).

A page that yields no text, or one that makes the extractor raise, gives ``None``; the caller
removes the document with the reason :data:`NO_EXTRACTABLE_TEXT`, so an odd page costs one
document, never the run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Final

import trafilatura

__all__ = ["EXTRACTION_SETTINGS", "NO_EXTRACTABLE_TEXT", "extract_batch", "extract_text"]

logger = logging.getLogger(__name__)

#: Removal reason for a document whose HTML gave no text (empty page, not HTML, or an
#: extractor error, which is also logged as a warning).
NO_EXTRACTABLE_TEXT: Final = "no_extractable_text"

#: Keyword arguments for ``trafilatura.extract``; everything that shapes the output is spelled
#: out rather than left to the installed version's defaults. Balanced focus with trafilatura's
#: fallbacks (readability, jusText, a baseline) on: ``fast=True`` is ~30% faster but gave up on
#: three times as many of the test pages, and ``favor_precision`` returned nothing for ~10%.
EXTRACTION_SETTINGS: Final[dict[str, Any]] = {
    "output_format": "txt",  # plain text, one block element per line
    "fast": False,
    "favor_precision": False,
    "favor_recall": False,
    "include_comments": False,  # reader comments are not the page's content
    "include_tables": False,  # cells would come out as "| a | b |" rows
    "include_images": False,
    "include_links": False,
    "include_formatting": False,  # no markdown emphasis markers
    "deduplicate": False,  # see the module docstring
    "with_metadata": False,  # no title/date header; also skips date parsing
    "target_language": None,  # language is the language tagger's decision
}

# A lone surrogate (from a JSON escape such as "\ud800" in a broken crawl record) makes lxml
# stop parsing there, losing the rest of the page; a replacement character costs nothing.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def extract_text(html: str, *, url: str | None = None) -> str | None:
    """Return the main-content text of one HTML page, or ``None`` if there is none.

    ``url`` only identifies the page in log messages; nothing is fetched. Paragraphs, headings
    and list items are separated by newlines, the text is stripped, and the same ``html``
    always gives the same result. ``None`` means no extractable text: an empty or text-free
    page, input the parser rejects, or an exception inside the extractor (logged as a warning
    with the URL, then absorbed so one bad page does not stop a batch). Input without any
    markup is treated as a page holding that text.
    """
    if _LONE_SURROGATE.search(html):
        html = _LONE_SURROGATE.sub("\ufffd", html)
    try:
        text = trafilatura.extract(html, url=url, **EXTRACTION_SETTINGS)
    except Exception as error:
        # Deliberately broad: trafilatura, lxml, jusText and readability raise many types.
        logger.warning(
            "HTML extraction failed for %s (%s: %s); counted as %s",
            url or "<no url>",
            type(error).__name__,
            error,
            NO_EXTRACTABLE_TEXT,
        )
        return None
    if text is None:
        return None
    text = text.strip()
    return text or None


def extract_batch(htmls: Sequence[str], urls: Sequence[str | None]) -> list[str | None]:
    """Apply :func:`extract_text` to each page; ``urls[i]`` belongs to ``htmls[i]``."""
    if len(htmls) != len(urls):
        raise ValueError(
            f"extract_batch got {len(htmls)} htmls but {len(urls)} urls; pass one url "
            "(or None) per page"
        )
    return [extract_text(html, url=url) for html, url in zip(htmls, urls, strict=True)]
