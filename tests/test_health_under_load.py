"""gunicorn as configured (``gunicorn.conf.py``): requests waiting for SAM encodings never take every
thread, so ``/health`` (Label Studio gives it 1 s) answers while annotators open new images at once.

The app is the real one (``create_app``, image loader, embedding cache and disk store) with the
tests' tiny SAM whose encoder blocks until the test releases it, so 16 requests stay inside their
encodings (one encoding, 15 waiting for the encoder) while ``/health`` is asked."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from local_http import LocalServer, content
from segmentation_fakes import CONFIG, rectangle
from support.processes import free_port, wait_for_health

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 16

pytestmark = pytest.mark.slow


def blocking_app():
    """The app gunicorn serves here: its SAM encoder waits for the file ``$RELEASE`` to exist."""
    from test_sam import tiny_sam

    from backend.app import create_app
    from backend.embeddings.cache import EmbeddingCache
    from backend.segmenter_set import SegmenterSet
    from backend.segmenters.sam import SamSegmenter, SegmentAnything
    from backend.settings import Settings

    class BlockingEncoder(SegmentAnything):
        def encode(self, array):
            while not os.path.exists(os.environ["RELEASE"]):
                time.sleep(0.05)
            return super().encode(array)

    settings = Settings.from_env()
    cache = EmbeddingCache.from_settings(settings, namespace="test")
    sam = SamSegmenter(BlockingEncoder(tiny_sam()), "sam-tiny", cache)
    return create_app(settings, segmenters=SegmenterSet(sam=sam, sam_name="sam-tiny", embeddings=cache))


def test_health_answers_while_every_client_waits_for_an_encoding(tmp_path):
    images = LocalServer()
    for index in range(CLIENTS):
        images.routes[f"/{index}.png"] = content(_png(index))
    port = free_port()
    release = tmp_path / "release"
    env = {key: value for key, value in os.environ.items() if key != "THREADS"}  # gunicorn.conf.py's default
    env.update(PORT=str(port), WORKERS="1", MODEL_DIR=str(tmp_path / "model"), RELEASE=str(release),
               IMAGE_DOWNLOADS=str(CLIENTS), EMBED_NEXT_TASKS="0", LABEL_STUDIO_URL="", PRELOAD="false",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "test_health_under_load:blocking_app()"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    statuses = []
    try:
        wait_for_health(url)
        requests.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=10).raise_for_status()

        def predict(index):
            body = {"tasks": [{"id": index + 1, "data": {"image": f"{images.url}/{index}.png"}}], "project": "1.1",
                    "label_config": CONFIG, "params": {"context": {"result": [rectangle(10, 10, 50, 50, size=(64, 48))]}}}
            statuses.append(requests.post(f"{url}/predict", json=body, timeout=120).status_code)

        clients = [threading.Thread(target=predict, args=(index,)) for index in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(3)  # every request has reached its encoding (or the wait for the encoder)
        assert statuses == []  # none can finish before the release
        started = time.monotonic()
        health = requests.get(f"{url}/health", timeout=10)
        assert health.status_code == 200 and time.monotonic() - started < 5
        assert statuses == []  # /health answered while all of them still waited
        release.touch()
        for client in clients:
            client.join(120)
        assert statuses == [200] * CLIENTS
    finally:
        release.touch()
        server.terminate()
        server.wait(30)
        images.close()


def _png(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


