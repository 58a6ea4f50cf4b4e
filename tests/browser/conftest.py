"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright (no browser
download). Without the binary the tests are skipped locally with the reason, but fail on CI
(``CI=true``), where a silent skip would hide that nothing was tested.

Label Studio and the backend are the session fixtures of tests/conftest.py, shared with
tests/integration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Tall enough that the image and all four rows of label chips fit without scrolling.
VIEWPORT = {"width": 1600, "height": 1200}


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A Playwright BrowserContext of Debian's chromium with a fresh profile directory."""
    if not CHROMIUM.exists():
        reason = f"no chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT,
        )
        yield context
        context.close()
