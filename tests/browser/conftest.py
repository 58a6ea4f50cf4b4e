"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright (no browser
download). Without the binary the tests are skipped locally with the reason, but fail on CI
(``CI=true``), where a silent skip would hide that nothing was tested.

Label Studio and the backend are the session fixtures of tests/conftest.py, shared with
tests/integration.

The flows record the time from their last click to the mask on the canvas (``click_to_mask``):
printed at the end of the run and written to ``outputs.CLICK_TO_MASK_FILE`` (var/browser/, or the
committed bench/results/click_to_mask.json that ``bench/click_to_mask.py`` prints).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from labeling_page import LabelingPage
from support.ls_server import PASSWORD, USERNAME
from outputs import CLICK_TO_MASK_FILE

_click_to_mask: dict[str, float] = {}  # flow -> seconds, this run

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# A laptop with a 900 px-tall screen, less the browser's own bars: the example configs keep the image
# and every label chip on it (the flows check, ``LabelingPage.off_screen``).
VIEWPORT = {"width": 1440, "height": 790}


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


@pytest.fixture(scope="session")
def open_labeling_page(chromium, label_studio) -> Iterator[Callable[[str], LabelingPage]]:
    """Opens a new page, logged in, for a labeling config: ``open_labeling_page(config)``; the
    pages close at the end of the session."""
    pages = []

    def open_page(label_config: str) -> LabelingPage:
        pages.append(chromium.new_page())
        labeling = LabelingPage(pages[-1], label_studio.url, label_config)
        labeling.login(USERNAME, PASSWORD)
        return labeling

    yield open_page
    for page in pages:
        page.close()


@pytest.fixture(scope="session")
def click_to_mask() -> Iterator[dict[str, float]]:
    """flow name -> seconds from the last click to the mask on the canvas."""
    yield _click_to_mask
    if _click_to_mask:
        CLICK_TO_MASK_FILE.parent.mkdir(parents=True, exist_ok=True)
        recorded = {"machine": _machine(), "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "seconds": {flow: round(seconds, 3) for flow, seconds in _click_to_mask.items()}}
        CLICK_TO_MASK_FILE.write_text(json.dumps(recorded, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter) -> None:
    if _click_to_mask:
        terminalreporter.section("labeling page: last click -> mask on the canvas")
        for flow, seconds in _click_to_mask.items():
            terminalreporter.write_line(f"{flow:<45} {seconds * 1000:8.0f} ms")


def _machine() -> str:
    """E.g. "Intel(R) Xeon(R) Processor, 2 CPUs" (the CPU model where /proc/cpuinfo names it)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{models[0] if models else platform.machine()}, {cpus} CPUs"
