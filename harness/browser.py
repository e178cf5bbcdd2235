"""Debian's Chromium under Playwright, for the browser tests and the browser benchmark.

Never ``playwright install`` (no browser downloads): the executable is the ``chromium`` package's,
found on the PATH. Playwright is imported lazily, so modules that only need the constants (a test's
skip condition, a benchmark's report) run without it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
NO_CHROMIUM = "Debian chromium not installed: `make chromium` (or apt-get install -y chromium)"


@contextlib.contextmanager
def chromium_browser() -> Iterator:
    """A headless Playwright browser on Debian's Chromium, closed when the block exits."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
