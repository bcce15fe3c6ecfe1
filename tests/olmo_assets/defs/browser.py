"""A researcher's walk through the lineage, in a real browser: headless Chromium (Debian's
``chromium``) driven by Playwright, over the real Dagster webserver and MLflow UI.

:func:`walk_lineage` opens an evaluation partition, then follows the links its metadata
shows — to the checkpoint, the training run, the token shards, the curated corpus and a raw
source — by clicking them (each opens in a new tab, as the UI opens metadata links), screenshotting each page and noting what it shows: the
page's text, and how many of its plots (images served by the MLflow UI) loaded.
:func:`mlflow_ui` serves the lab's tracking store as ``make ui`` does.
"""

from __future__ import annotations

import shutil
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .webserver import serving

CHROMIUM = "/usr/bin/chromium"
# Tall: the UI scrolls inside its own panes, so a screenshot shows the viewport.
VIEWPORT = {"width": 1400, "height": 2200}
# As root, Chromium needs --no-sandbox; the rest keep it off a network this machine lacks.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    """Debian's Chromium, if installed (``make test`` installs it where it can)."""
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


@contextmanager
def mlflow_ui(port: int, backend: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """``mlflow ui`` on the tracking store ``backend`` until the block ends; its URL."""
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        *("--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", backend),
        # One worker for one browser: each of the default four imports the whole server
        # (about 19 CPU seconds to start them, against 8 for one).
        *("--workers", "1"),
    ]
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
            return bool(answer.status == 200)

    with serving(command, ready, env, log, log.parent):
        yield url


@dataclass
class Page:
    url: str
    text: str
    screenshot: Path
    images: int
    """Plots on the page served by the MLflow UI."""
    loaded: int
    """Of those, how many the browser decoded (a broken link has no width)."""
    clipped: int
    """Of those, how many reach past the edge of what shows them (the UI cuts them off)."""
    links: dict[str, str] = field(default_factory=dict)
    """Each ``upstream/...`` link the page shows: its label and address."""


def _skip_welcome(page: Any) -> Any:
    """Dagster's first-visit newsletter prompt covers the page until skipped: whenever it
    shows (on a busy machine, seconds after the page loaded), it is skipped before the
    browser clicks anything."""
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
    return page


def _dismiss_welcome(page: Any) -> None:
    """The prompt on the first page, skipped before its screenshot."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=4000)
    except PlaywrightTimeout:
        return  # no prompt yet: the handler skips it if it shows later
    skip.click()


def _read(page: Any, expect: str, shot: Path) -> Page:
    """What the loaded page shows, once ``expect`` is on it and its plots are in."""
    page.get_by_text(expect, exact=False).first.wait_for(timeout=60_000)
    # Plots come from another server: wait until each has loaded or failed.
    page.wait_for_function(
        "Array.from(document.images).filter(i => i.src.includes('get-artifact'))"
        ".every(i => i.complete)",
        timeout=30_000,
    )
    images, loaded, clipped = page.evaluate(
        "(() => { const plots = Array.from(document.images)"
        ".filter(i => i.src.includes('get-artifact'));"
        # Cut off: it reaches past the right edge of an ancestor that clips what overflows.
        " const edge = i => { let right = Infinity;"
        " for (let a = i.parentElement; a; a = a.parentElement) {"
        " if (getComputedStyle(a).overflowX !== 'visible')"
        " right = Math.min(right, a.getBoundingClientRect().right); }"
        " return right; };"
        " const cut = i => i.getBoundingClientRect().right > edge(i) + 1;"
        " return [plots.length, plots.filter(i => i.naturalWidth > 0).length,"
        " plots.filter(cut).length]; })()"
    )
    links = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('tr')).flatMap(row => {"
        " const cells = row.querySelectorAll('td'); const a = row.querySelector('a[href]');"
        " const label = cells.length ? cells[0].innerText.trim() : '';"
        " return label.startsWith('upstream/') && a ? [[label, a.href]] : []; }))"
    )
    page.screenshot(path=str(shot), full_page=True)
    return Page(page.url, page.inner_text("body"), shot, images, loaded, clipped, links)


def _click_through(page: Any, label: str) -> Any:
    """Click the link in the metadata row ``label``; the page it opens (a new tab, as the UI
    opens metadata links)."""
    row = page.locator("tr").filter(has=page.locator("td").get_by_text(label, exact=True)).first
    with page.context.expect_page() as opened:
        row.locator("a[href]").first.click()
    tab = _skip_welcome(opened.value)
    tab.set_viewport_size(VIEWPORT)
    return tab


def walk_lineage(
    start: str,
    shots: Path,
    steps: list[tuple[str, str]],
    also: Sequence[tuple[str, str]] = (),
) -> list[Page]:
    """Open ``start``; then, for each ``(link label, text to wait for)``, click the link of
    that label on the current page and read the page it opens; then open each
    ``(address, text to wait for)`` of ``also``. Each page is screenshotted into ``shots``."""
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    pages: list[Page] = []
    browser_path = chromium()
    assert browser_path, "Chromium is not installed"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            # The checks below run as page scripts; Dagster's Content-Security-Policy forbids
            # evaluating strings on some pages, so the test's own context bypasses it.
            page = _skip_welcome(browser.new_page(viewport=VIEWPORT, bypass_csp=True))
            page.goto(start)
            _dismiss_welcome(page)
            pages.append(_read(page, "upstream/", shots / "1-start.png"))
            for number, (label, expect) in enumerate(steps, start=2):
                assert label in pages[-1].links, (label, pages[-1].url, pages[-1].links)
                page = _click_through(page, label)
                shot = shots / f"{number}-{label.replace('/', '_')}.png"
                pages.append(_read(page, expect, shot))
            for number, (url, expect) in enumerate(also, start=len(pages) + 1):
                page.goto(url)
                name = url.split("://")[1].split("/", 1)[1].replace("/", "_")
                pages.append(_read(page, expect, shots / f"{number}-{name}.png"))
        finally:
            browser.close()
    return pages
