"""Headless Chromium for tests that look at a page the way a person does.

Playwright drives Debian's `chromium` (`apt-get install chromium`): Playwright cannot download
its own browser builds here. Screenshots go to `tests/artifacts/` (gitignored), so a failed run
leaves the picture of what was on the screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# No sandbox: CI runs as root. The rest keeps the browser from talking to anything but the page.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def artifact(name: str) -> Path:
    """Where a test writes a file for people to look at after the run."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
