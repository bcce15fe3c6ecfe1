"""Main-content extraction from HTML pages (olmo_assets.curation.html)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from olmo_assets.curation import html as html_extraction
from olmo_assets.curation.html import extract_batch, extract_text

FIRST_PARAGRAPH = (
    "The lighthouse keeper climbed the spiral staircase every evening at dusk, counting the "
    "one hundred and twelve iron steps while the wind rattled the narrow windows."
)
SECOND_PARAGRAPH = (
    "When the lamp was lit, its beam swept across the harbour, and the fishing boats turned "
    "for home long before the fog rolled in from the open sea."
)
PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>The Lighthouse Keeper</title>
  <style>body {{ font-family: serif; }} .stylemarker {{ color: red; }}</style>
  <script>var trackingMarker = "scriptmarker"; console.log(trackingMarker);</script>
</head>
<body>
  <nav><ul>
    <li><a href="/">Home</a></li>
    <li><a href="/stories">Navmarker stories</a></li>
    <li><a href="/contact">Contact</a></li>
  </ul></nav>
  <main><article>
    <h1>The Lighthouse Keeper</h1>
    <p>{FIRST_PARAGRAPH}</p>
    <p>{SECOND_PARAGRAPH}</p>
  </article></main>
  <footer><p>Footermarker © 2024 Harbour Press. All rights reserved.</p></footer>
  <script>document.write("another scriptmarker");</script>
</body>
</html>"""


def test_keeps_the_article_and_drops_boilerplate() -> None:
    text = extract_text(PAGE, url="https://example.org/lighthouse")
    assert text is not None
    lines = text.splitlines()
    assert FIRST_PARAGRAPH in lines
    assert SECOND_PARAGRAPH in lines
    assert lines.index(FIRST_PARAGRAPH) < lines.index(SECOND_PARAGRAPH)
    for marker in ("scriptmarker", "trackingMarker", "stylemarker", "font-family"):
        assert marker not in text
    for marker in ("Navmarker", "Footermarker", "All rights reserved"):
        assert marker not in text


@pytest.mark.parametrize(
    "page",
    ["", "   \n\t ", "<html><body></body></html>", "<<<>>>", "\x00\x01\x02\x03"],
    ids=["empty", "whitespace", "empty-body", "brackets", "control-chars"],
)
def test_nothing_extractable_gives_none(page: str) -> None:
    assert extract_text(page) is None


def test_non_ascii_text_is_preserved() -> None:
    paragraph = (
        "Der Garten hinter dem Haus blüht im Frühling, wenn die Kirschbäume ihre weißen "
        "Blüten öffnen — 日本語の文章もそのまま残ります。Ελληνικά, русский, emoji 🌸."
    )
    page = f"<html><head><meta charset='utf-8'></head><body><article><p>{paragraph}</p></article></body></html>"
    text = extract_text(page)
    assert text is not None
    assert paragraph in text


def test_lone_surrogate_does_not_lose_the_page() -> None:
    page = PAGE.replace(FIRST_PARAGRAPH, FIRST_PARAGRAPH + " \ud800")
    text = extract_text(page)
    assert text is not None
    assert SECOND_PARAGRAPH in text
    assert "\ufffd" in text


def test_output_is_deterministic() -> None:
    first = extract_text(PAGE)
    assert first is not None
    assert extract_text(PAGE) == first
    # No cross-document state: the same page after the same page is not treated as a duplicate.
    assert extract_batch([PAGE, PAGE], [None, None]) == [first, first]


def test_extractor_exception_gives_none_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def crash(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(html_extraction.trafilatura, "extract", crash)
    assert extract_text(PAGE, url="https://example.org/bad") is None
    assert "https://example.org/bad" in caplog.text
    assert "parser exploded" in caplog.text
    assert extract_batch([PAGE, PAGE], ["a", None]) == [None, None]


def test_extraction_does_not_use_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("extraction tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert extract_text(PAGE, url="https://example.org/lighthouse") is not None


def test_batch_matches_single_calls_and_checks_lengths() -> None:
    pages = [
        PAGE,
        "",
        "<html><body><article><p>Ünïcödé body text here.</p></article></body></html>",
    ]
    urls: list[str | None] = ["https://example.org/1", None, "https://example.org/3"]
    assert extract_batch(pages, urls) == [
        extract_text(p, url=u) for p, u in zip(pages, urls, strict=True)
    ]
    with pytest.raises(ValueError, match="2 htmls but 1 urls"):
        extract_batch([PAGE, PAGE], [None])
