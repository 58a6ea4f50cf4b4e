"""/health while annotators open new images at once: does the server keep answering in milliseconds?

Starts the backend under gunicorn with ``gunicorn.conf.py`` (one worker, preloaded), built by
``create_app`` as ``backend.wsgi`` builds it, with the real image loader, embedding cache and disk
store; its SAM is the tests' tiny SAM 1 of random weights (``--model tiny``, about 1 s per encoding
on a busy 2-core machine), or with ``--model sam2.1_hiera_tiny`` that architecture with random
weights loaded through ``SAM_CHECKPOINT`` (``gunicorn backend.wsgi:app``; ~15 s per encoding
there). A local image host serves a distinct photo-sized PNG per client. ``--clients`` clients each send one interactive
``/predict`` (a rectangle) on their own new image, all at once, while another client times
``GET /health`` every 0.1 s until the last prediction answers. Runs once per ``--threads`` value
(gunicorn ``THREADS``; 4 was the default before 32) and prints /health's latency (median, p95, max)
during the load, each /predict's status and the slowest, and the store's request counts.
``IMAGE_DOWNLOADS`` is raised to the client count so downloads are not what is measured.
Asserts nothing.

    .venv/bin/python bench/health_under_load.py [--clients 8 16] [--threads 4 32] [--model tiny]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from local_http import LocalServer, respond  # noqa: E402
from segmentation_fakes import CONFIG, rectangle  # noqa: E402
from support.processes import wait_for_health  # noqa: E402

MODEL_TYPE = "sam2.1_hiera_tiny"
WIDTH, HEIGHT = 1024, 768


def random_checkpoint(folder: Path) -> Path:
    import torch

    from backend.segmenters.sam21 import Sam21

    torch.manual_seed(0)
    path = folder / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": Sam21.build(MODEL_TYPE).state_dict()}, path)  # the official files' layout
    return path


def tiny_sam_app():
    """The app gunicorn serves for ``--model tiny`` (``health_under_load:tiny_sam_app()``)."""
    from test_sam import tiny_sam

    from backend.app import create_app
    from backend.embeddings.cache import EmbeddingCache
    from backend.segmenter_set import SegmenterSet
    from backend.segmenters.sam import SamSegmenter, SegmentAnything
    from backend.settings import Settings

    settings = Settings.from_env()
    cache = EmbeddingCache.from_settings(settings, namespace="bench")
    sam = SamSegmenter(SegmentAnything(tiny_sam()), "sam-tiny", cache)
    return create_app(settings, segmenters=SegmenterSet(sam=sam, sam_name="sam-tiny", embeddings=cache))


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(threads: int, clients: int, checkpoint: Path | None, images: LocalServer, first_image: int) -> dict:
    port = free_port()
    env = dict(os.environ, PORT=str(port), THREADS=str(threads), WORKERS="1", MODEL_DIR=tempfile.mkdtemp(),
               IMAGE_DOWNLOADS=str(clients), EMBED_NEXT_TASKS="0", EMBED_AHEAD="0", LABEL_STUDIO_URL="",
               PRELOAD="true", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]))
    if checkpoint is None:
        app = "health_under_load:tiny_sam_app()"
    else:
        app = "backend.wsgi:app"
        env.update(SAM_MODEL_TYPE=MODEL_TYPE, SAM_CHECKPOINT=str(checkpoint))
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", app], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, timeout_s=300)
        requests.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=10).raise_for_status()
        answers, health = [], []
        done = threading.Event()
        go = threading.Barrier(clients + 1)

        def predict(index: int) -> None:
            image = f"{images.url}/image-{first_image + index}.png"
            body = {"tasks": [{"id": index + 1, "data": {"image": image}}], "project": "1.1", "label_config": CONFIG,
                    "params": {"context": {"result": [rectangle(100, 100, 400, 300, size=(WIDTH, HEIGHT))]}}}
            go.wait()
            started = time.monotonic()
            try:
                status = requests.post(f"{url}/predict", json=body, timeout=300).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            answers.append((status, time.monotonic() - started))

        workers = [threading.Thread(target=predict, args=(i,)) for i in range(clients)]
        for worker in workers:
            worker.start()
        go.wait()
        time.sleep(0.2)  # the predictions have reached the server
        while not done.is_set():
            started = time.monotonic()
            try:
                requests.get(f"{url}/health", timeout=60).raise_for_status()
            except requests.RequestException:
                pass
            health.append(time.monotonic() - started)
            done.wait(0.1)
            if all(not worker.is_alive() for worker in workers):
                done.set()
        embeddings = requests.get(f"{url}/health", timeout=10).json().get("embeddings", {})
    finally:
        server.terminate()
        server.wait()
    health_ms = sorted(seconds * 1000 for seconds in health)
    return {"threads": threads, "clients": clients, "health_checks": len(health_ms),
            "health_median_ms": round(statistics.median(health_ms), 1),
            "health_p95_ms": round(health_ms[int(0.95 * (len(health_ms) - 1))], 1),
            "health_max_ms": round(health_ms[-1], 1),
            "predict_statuses": sorted({str(status) for status, _ in answers}),
            "predict_slowest_s": round(max(seconds for _, seconds in answers), 2),
            "store": {key: embeddings.get(key) for key in ("hits", "misses", "waits")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--model", choices=["tiny", MODEL_TYPE], default="tiny")
    args = parser.parse_args()
    checkpoint = random_checkpoint(Path(tempfile.mkdtemp())) if args.model == MODEL_TYPE else None
    images = LocalServer()
    count = len(args.threads) * sum(args.clients)
    for index in range(count):
        body = png(index)
        images.routes[f"/image-{index}.png"] = lambda handler, body=body: respond(handler, 200, body, {"Content-Type": "image/png"})
    first = 0
    try:
        for clients in args.clients:
            for threads in args.threads:
                print(run(threads, clients, checkpoint, images, first), flush=True)
                first += clients
    finally:
        images.close()


if __name__ == "__main__":
    main()
