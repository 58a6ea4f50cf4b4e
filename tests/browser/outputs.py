"""Where the browser tests write their screenshots and click-to-mask timings.

By default under ``var/browser/`` (ignored by git), so that running the tests leaves ``git status``
clean. With ``BROWSER_REFRESH_COMMITTED=true`` — what ``bench/click_to_mask.py --run`` sets — they
replace the committed ones: ``docs/screenshots/`` (the annotator's guide shows them) and
``bench/results/click_to_mask.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFRESH_COMMITTED = os.environ.get("BROWSER_REFRESH_COMMITTED", "").lower() == "true"
SCREENSHOTS = REPO / "docs" / "screenshots" if REFRESH_COMMITTED else REPO / "var" / "browser" / "screenshots"
CLICK_TO_MASK_FILE = (REPO / "bench" / "results" if REFRESH_COMMITTED else REPO / "var" / "browser") / "click_to_mask.json"
