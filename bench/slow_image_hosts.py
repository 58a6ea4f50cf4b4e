"""Slow image hosts: does the server stay responsive while image downloads hang?

Starts the backend as users run it (``gunicorn backend.wsgi:app``, one worker, ``THREADS=4``, no
SAM) and a server on 127.0.0.1 that answers with a status line and then one header byte every
0.5 s (each read is quick, the response never completes). Sends four interactive ``/predict``
requests whose image is on that server, and meanwhile times ``GET /health``. Prints each
``/predict``'s status and duration and each ``/health``'s: with ``IMAGE_DOWNLOADS=2`` two downloads
are cut at the ``IMAGE_TIMEOUT`` deadline (422), the others are refused at once (503), and
``/health`` keeps answering. Asserts nothing.

    .venv/bin/python bench/slow_image_hosts.py [--timeout 30]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from local_http import LocalServer, trickle_headers  # noqa: E402
from segmentation_fakes import CONFIG, rectangle  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=30.0, help="IMAGE_TIMEOUT of the backend")
    args = parser.parse_args()
    slow = LocalServer()
    slow.routes["/slow.png"] = trickle_headers(0.5, count=int(4 * args.timeout))
    port = free_port()
    env = dict(os.environ, PORT=str(port), THREADS="4", WORKERS="1", MODEL_DIR=tempfile.mkdtemp(),
               SAM_MODEL_TYPE="none", IMAGE_TIMEOUT=str(args.timeout), IMAGE_DOWNLOADS="2")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "backend.wsgi:app"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        requests.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=10).raise_for_status()
        body = {"tasks": [{"id": 1, "data": {"image": f"{slow.url}/slow.png"}}], "project": "1.1",
                "label_config": CONFIG, "params": {"context": {"result": [rectangle(10, 10, 50, 50)]}}}
        answers = []

        def predict() -> None:
            started = time.monotonic()
            status = requests.post(f"{url}/predict", json=body, timeout=args.timeout + 30).status_code
            answers.append((status, time.monotonic() - started))

        threads = [threading.Thread(target=predict) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        for _ in range(5):
            started = time.monotonic()
            status = requests.get(f"{url}/health", timeout=10).status_code
            print(f"GET /health during the downloads: {status} in {time.monotonic() - started:.3f} s")
            time.sleep(0.5)
        for thread in threads:
            thread.join()
        for status, seconds in sorted(answers, key=lambda a: a[1]):
            print(f"POST /predict (image on the trickling host): {status} after {seconds:.2f} s")
    finally:
        server.terminate()
        server.wait()
        slow.close()


if __name__ == "__main__":
    main()
