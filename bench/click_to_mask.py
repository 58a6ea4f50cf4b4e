"""Click to mask in the real labeling page: seconds from the annotator's last click (or the end of
a drag) until the mask is on Label Studio's canvas, per flow of the browser test.

The figures come from the end-to-end browser test (tests/browser/test_browser_flows.py), which
measures them inside the page: from the pointer release to two animation frames after the page's
store holds the new mask, so they include Label Studio's server, the backend, the model and the
page's rendering. This script prints the committed bench/results/click_to_mask.json, or with
``--run`` first runs the browser test with ``BROWSER_REFRESH_COMMITTED=true``, which refreshes that
file and the committed screenshots in docs/screenshots/ (a real Label Studio, the backend with the
committed extreme-point weights and a random-weight SAM, and Debian's chromium; a few minutes).
A plain test run writes both under var/browser/ instead, leaving the committed ones alone.

    .venv/bin/python bench/click_to_mask.py [--run]

The smart-rectangle figure includes computing the image's SAM embedding (its first prompt on
that image); the click flow after it reuses the embedding. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "click_to_mask.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the browser test first to record fresh figures")
    args = parser.parse_args()
    if args.run:
        test = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/browser"], cwd=REPO,
                              env={**os.environ, "BROWSER_REFRESH_COMMITTED": "true"})
        if test.returncode != 0:
            print(f"the browser test failed (exit {test.returncode}); figures not refreshed", file=sys.stderr)
            return test.returncode
    if not RESULTS.exists():
        print(f"no figures at {RESULTS}: run the browser test (this script with --run)", file=sys.stderr)
        return 1
    recorded = json.loads(RESULTS.read_text())
    print(f"last click -> mask on the canvas, Label Studio labeling page in headless chromium "
          f"({recorded['machine']}, recorded {recorded['recorded']})")
    for flow, seconds in recorded["seconds"].items():
        print(f"  {flow:<45} {seconds * 1000:8.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
