"""Slow image hosts and many annotators at once: does every first load get its image, and does the
server stay responsive?

Starts the backend as users run it (``gunicorn backend.wsgi:app``, one worker, ``THREADS=4``,
``IMAGE_DOWNLOADS=2``, no SAM) and image hosts on 127.0.0.1, then sends interactive ``/predict``
requests at once, each the first load of its image:

- ``same URL``: 12 requests for one new image on a host that takes 1 s per image;
- ``different URLs``: 12 requests for 12 new images on a fast host (0.1 s per image);
- ``slow + fast hosts``: 3 new images on a host that takes 2.5 s each, then 9 on the fast host;
- ``trickling host`` (``--trickle``): 4 requests whose host sends one header byte every 0.5 s, never
  finishing, while ``GET /health`` is timed.

Prints per scenario the answers by status, the median and longest duration, and how many downloads
each image host served. Asserts nothing.

    .venv/bin/python bench/slow_image_hosts.py [--timeout 30] [--trickle] [--checkout DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from local_http import LocalServer, content, delayed, trickle_headers  # noqa: E402
from segmentation_fakes import CONFIG, rectangle  # noqa: E402
from support.processes import free_port, wait_for_health  # noqa: E402


def png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


class Host:
    """An image host whose every image takes ``delay_s`` to answer; counts the downloads it served."""

    def __init__(self, delay_s: float):
        self.server = LocalServer()
        self.delay_s = delay_s
        self._png = png_bytes()

    def image(self, name: str) -> str:
        self.server.routes[f"/{name}.png"] = delayed(content(self._png), self.delay_s)
        return f"{self.server.url}/{name}.png"

    def downloads(self) -> int:
        return len(self.server.seen)


def predict_at_once(url: str, images: list[str], timeout_s: float) -> list[tuple[str, int, float]]:
    """POSTs one interactive /predict per image, all at once: [(image, status, seconds)]."""
    answers = []

    def predict(image: str) -> None:
        body = {"tasks": [{"id": 1, "data": {"image": image}}], "project": "1.1", "label_config": CONFIG,
                "params": {"context": {"result": [rectangle(10, 10, 50, 50)]}}}
        started = time.monotonic()
        try:
            status = requests.post(f"{url}/predict", json=body, timeout=timeout_s + 60).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        answers.append((image, status, time.monotonic() - started))

    threads = [threading.Thread(target=predict, args=(image,)) for image in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def show(name: str, answers: list[tuple[str, int, float]], served: str = "") -> None:
    statuses = ", ".join(f"{count} x {status}" for status, count in sorted(Counter(a[1] for a in answers).items(),
                                                                         key=str))
    seconds = [a[2] for a in answers]
    print(f"{name:26} {len(answers):2} requests: {statuses:12} median {statistics.median(seconds):5.2f} s, "
          f"max {max(seconds):5.2f} s{'; ' + served if served else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=30.0, help="IMAGE_TIMEOUT of the backend")
    parser.add_argument("--trickle", action="store_true", help="also the never-finishing host (takes --timeout)")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the backend checkout to run (default: this one)")
    args = parser.parse_args()
    port = free_port()
    env = dict(os.environ, PORT=str(port), THREADS="4", WORKERS="1", MODEL_DIR=tempfile.mkdtemp(),
               SAM_MODEL_TYPE="none", IMAGE_TIMEOUT=str(args.timeout), IMAGE_DOWNLOADS="2")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "backend.wsgi:app"], cwd=args.checkout, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    hosts = {"one": Host(1.0), "fast": Host(0.1), "slow": Host(2.5)}
    try:
        wait_for_health(url, timeout_s=120)
        requests.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=10).raise_for_status()
        print(f"backend: {args.checkout}, THREADS=4, IMAGE_DOWNLOADS=2, IMAGE_TIMEOUT={args.timeout:g}")
        one = hosts["one"].image("same")
        show("same URL (1 s host)", predict_at_once(url, [one] * 12, args.timeout),
             f"downloads served: {hosts['one'].downloads()}")
        fast = [hosts["fast"].image(f"different-{i}") for i in range(12)]
        show("different URLs (0.1 s host)", predict_at_once(url, fast, args.timeout),
             f"downloads served: {hosts['fast'].downloads()}")
        slow = [hosts["slow"].image(f"slow-{i}") for i in range(3)]
        mixed = [hosts["fast"].image(f"mixed-{i}") for i in range(9)]
        answers = predict_at_once(url, slow + mixed, args.timeout)
        show("slow + fast hosts", answers)
        show("  of which slow (2.5 s)", [a for a in answers if a[0] in slow])
        show("  of which fast (0.1 s)", [a for a in answers if a[0] in mixed])
        if args.trickle:
            trickling = LocalServer()
            trickling.routes["/slow.png"] = trickle_headers(0.5, count=int(4 * args.timeout))
            answers: list = []
            worker = threading.Thread(target=lambda: answers.extend(
                predict_at_once(url, [f"{trickling.url}/slow.png"] * 4, args.timeout)))
            worker.start()
            time.sleep(1.0)
            for _ in range(5):
                started = time.monotonic()
                status = requests.get(f"{url}/health", timeout=10).status_code
                print(f"GET /health during the trickling downloads: {status} in {time.monotonic() - started:.3f} s")
                time.sleep(0.5)
            worker.join()
            show("trickling host", answers)
            trickling.close()
    finally:
        server.terminate()
        server.wait()
        for host in hosts.values():
            host.server.close()


if __name__ == "__main__":
    main()
