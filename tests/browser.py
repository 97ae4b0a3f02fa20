"""A static HTML page in headless Chromium (Debian's /usr/bin/chromium through Playwright): no console
error, no failed request, every image decoded; and a full-page screenshot for people to look at.

`check_page` skips the calling test where the browser or Playwright is missing, like
tests/unit/serve/test_review_page.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

UNDECODED_IMAGES = """() => Array.from(document.images)
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.alt || img.src.slice(0, 60))"""


def check_page(html_path: Path, screenshot_path: Path) -> None:
    """Open `html_path` from file://, fail on any console error, page error, failed request or image
    the browser could not decode, and save a full-page screenshot to `screenshot_path`."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda message: problems.append(f"console: {message.text}")
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url[:80]}"))
            page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
            undecoded = page.evaluate(UNDECODED_IMAGES)
            screenshot_path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            browser.close()
    assert undecoded == [], f"images the browser could not decode: {undecoded}"
    assert problems == []
