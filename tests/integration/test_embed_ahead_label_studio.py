"""Embedding ahead against a real Label Studio 1.23: tasks imported and never opened answer their
first SAM prompt from the store, and still do after the backend restarts.

The backend runs in this process (a threaded WSGI server on localhost), so a tiny SAM of the real
architecture can stand in for ViT-B and its encoder calls can be counted. Label Studio is real:
its import webhook (TASKS_CREATED) queues the first image, its interactive-annotating endpoint
forwards the prompts, and its task API tells the backend the next unlabeled tasks.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from support.preannotation_project import LABEL_CONFIG, image_uri, object_box, rectangle
from support.processes import ServerProcess, free_port
from werkzeug.serving import make_server

from backend.app import create_app
from backend.images import ImageLoader
from backend.segmenter_set import SegmenterSet
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters.sam import SamSegmenter, SegmentAnything
from backend.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 120, 90
TIMEOUT_S = 60.0


class InProcessBackend:
    """The backend app with a tiny SAM, served on a free port; ``encoder_runs`` lists a digest of
    each embedded image (the encoder's input), in order."""

    def __init__(self, settings: Settings, port: int | None = None):
        from test_sam import tiny_sam

        sam = tiny_sam()
        self.encoder_runs: list[int] = []
        sam.image_encoder.register_forward_hook(
            lambda module, args, output: self.encoder_runs.append(hash(args[0].detach().cpu().numpy().tobytes())))
        cache = EmbeddingCache.from_settings(settings, namespace="tiny-sam")
        segmenter = SamSegmenter(SegmentAnything(sam), "sam-tiny", cache)
        segmenters = SegmenterSet(sam=segmenter, sam_name="sam-tiny", embeddings=cache)
        self.app = create_app(settings, segmenters=segmenters, images=ImageLoader(settings))
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def embed_status(self) -> dict:
        return self.app.extensions["segmentation_model"].embed_ahead.queue.status()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.app.extensions["segmentation_model"].embed_ahead.queue.stop()


def wait_until(condition, what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def prompt(api, ml_id: int, task_id: int, index: int) -> None:
    """A smart rectangle on the task's object, as the labeling page sends it (random weights: the mask
    itself may be empty; what counts here is that SAM answered)."""
    region = {**rectangle(object_box(index, WIDTH, HEIGHT), WIDTH, HEIGHT), "id": f"r{task_id}"}
    answer = api.post(f"/api/ml/{ml_id}/interactive-annotating", json={"task": task_id, "context": {"result": [region]}})
    assert "errors" not in answer and answer["data"]["model_version"].endswith("+sam-tiny"), answer


def test_imported_tasks_answer_their_first_prompt_from_the_store_also_after_a_restart(label_studio, tmp_path):
    api = label_studio.api
    settings = replace(Settings(), model_dir=tmp_path / "model_dir", label_studio_url=label_studio.url,
                       label_studio_api_key=label_studio.personal_access_token, embed_ahead=1, embed_next_tasks=2)
    backend = InProcessBackend(settings)
    try:
        project = api.post("/api/projects/", json={"title": "embed ahead", "label_config": LABEL_CONFIG.read_text()})["id"]
        ml = api.post("/api/ml/", json={"project": project, "url": backend.url, "title": "segmentation assist",
                                        "is_interactive": True})
        tasks = api.post(f"/api/projects/{project}/import?return_task_ids=true", json=[
            {"data": {"image": image_uri(object_box(i, WIDTH, HEIGHT), WIDTH, HEIGHT)}} for i in range(4)])["task_ids"]
        # Task 3 is labeled already: the next tasks after task 1 are 2 and 4.
        api.post(f"/api/tasks/{tasks[2]}/annotations/", json={"result": [], "was_cancelled": False})

        # The import webhook queued the first task's image (EMBED_AHEAD=1); nobody opened it.
        wait_until(lambda: backend.embed_status["embedded"] == 1, "the imported task was embedded")
        [imported] = backend.encoder_runs
        prompt(api, ml["id"], tasks[0], 0)
        # The first prompt came from the store. The next tasks it queues may be embedding already
        # (a tiny SAM takes milliseconds), so it is the prompted image that must not come again.
        assert backend.encoder_runs.count(imported) == 1

        # That prompt queued the next unlabeled tasks, read from Label Studio: 2 and 4, not 3.
        wait_until(lambda: backend.embed_status["embedded"] == 3, "the next tasks were embedded")
        assert len(set(backend.encoder_runs)) == len(backend.encoder_runs) == 3
        prompt(api, ml["id"], tasks[1], 1)
        assert len(backend.encoder_runs) == 3
    finally:
        backend.stop()

    # Same address, MODEL_DIR and checkpoint; nothing of the first backend's memory.
    restarted = InProcessBackend(settings, port=backend.port)
    try:
        prompt(api, ml["id"], tasks[3], 3)  # embedded before the restart, never opened
        assert restarted.encoder_runs == []
        health = restarted.app.test_client().get("/health").get_json()["embeddings"]
        assert health["entries"] == 3 and health["hit_rate"] == 1.0, health
    finally:
        restarted.stop()


def test_a_forged_import_event_downloads_nothing_it_names(label_studio, tmp_path):
    """Issue 20, finding 6: TASKS_CREATED is open to anyone, and its tasks' image URLs (internal hosts,
    Label Studio API paths fetched with the token) were downloaded. The event only names tasks; their
    images are read from Label Studio."""
    api = label_studio.api
    internal = ImageServer({"/secret.png": base64.b64decode(image_uri(object_box(9, WIDTH, HEIGHT), WIDTH, HEIGHT)
                                                            .split(",")[1])})
    requested: list[str] = []
    internal.RequestHandlerClass.log_request = lambda handler, *args: requested.append(handler.path)
    settings = replace(Settings(), model_dir=tmp_path / "model_dir", label_studio_url=label_studio.url,
                       label_studio_api_key=label_studio.personal_access_token, embed_ahead=5, embed_next_tasks=0)
    backend = InProcessBackend(settings)
    try:
        project = api.post("/api/projects/", json={"title": "forged import", "label_config": LABEL_CONFIG.read_text()})["id"]
        api.post("/api/ml/", json={"project": project, "url": backend.url, "title": "segmentation assist",
                                   "is_interactive": True})
        tasks = api.post(f"/api/projects/{project}/import?return_task_ids=true", json=[
            {"data": {"image": image_uri(object_box(i, WIDTH, HEIGHT), WIDTH, HEIGHT)}} for i in range(2)])["task_ids"]
        wait_until(lambda: backend.embed_status["embedded"] == 2, "the imported tasks were embedded")

        forged = [{"id": tasks[1], "data": {"image": f"{internal.url}/secret.png"}},
                  {"id": tasks[1] + 1000, "data": {"image": "/api/current-user/token"}}]
        answer = requests.post(f"{backend.url}/webhook", timeout=10,
                               json={"action": "TASKS_CREATED", "project": {"id": project}, "tasks": forged})
        assert answer.json()["embeddings_ahead"] == "looking up", answer.text
        time.sleep(3.0)
        status = backend.embed_status
        assert requested == [] and len(backend.encoder_runs) == 2, (requested, status)
        assert status["failed"] == 0 and status["embedded"] == 2, status
    finally:
        backend.stop()
        internal.shutdown()


class ImageServer(ThreadingHTTPServer):
    """Serves ``files`` (path -> PNG bytes) on 127.0.0.1 from a daemon thread."""

    def __init__(self, files: dict[str, bytes]):
        files_ = files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = files_.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_two_workers_share_the_queue_and_compute_each_embedding_once(redis_server, tmp_path):  # noqa: F811
    """Two ``python -m backend worker`` processes (SAM 2.1 hiera_tiny, random weights) take images from
    the RQ queues; two URLs with the same picture make one embedding."""
    import torch
    from redis import Redis
    from rq import Worker

    from backend.embeddings.rq_queue import RQEmbedQueue
    from backend.embeddings.scheduler import IMPORT
    from backend.embeddings.embed_one import EmbedRequest
    from backend.segmenters.sam21 import Sam21

    Redis.from_url(redis_server.url).flushdb()
    torch.manual_seed(0)
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": Sam21.build("sam2.1_hiera_tiny").state_dict()}, checkpoint)
    pictures = {f"/{i}.png": base64.b64decode(image_uri(object_box(i, WIDTH, HEIGHT), WIDTH, HEIGHT).split(",")[1])
                for i in range(4)}
    pictures["/0-copy.png"], pictures["/1-copy.png"] = pictures["/0.png"], pictures["/1.png"]
    server = ImageServer(pictures)
    env = {**os.environ, "REDIS_URL": redis_server.url, "MODEL_DIR": str(tmp_path / "model_dir"), "DEVICE": "cpu",
           "SAM_MODEL_TYPE": "sam2.1_hiera_tiny", "SAM_CHECKPOINT": str(checkpoint), "OMP_NUM_THREADS": "1"}
    workers = [ServerProcess(f"worker {n}", [sys.executable, "-m", "backend", "worker", "--name", f"embed-w{n}"],
                             env, cwd=REPO_ROOT, log_path=tmp_path / f"worker{n}.log") for n in (1, 2)]
    queue = RQEmbedQueue(redis_server.url, max_queued=100)
    try:
        wait_until(lambda: len(Worker.all(connection=queue.connection)) == 2, "both workers listen")
        paths = sorted(pictures)
        assert queue.submit([EmbedRequest(server.url + path, n, "7") for n, path in enumerate(paths)], IMPORT) == 6
        wait_until(lambda: queue.status()["done"] == 6, "every image was handled", timeout_s=600)
        logs = [worker.log_tail(200) for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
        server.shutdown()
    for log in logs:  # both workers took images
        assert "Job OK" in log, log
    status = queue.status()
    assert (status["embedded"], status["stored_already"], status["failed"]) == (4, 2, 0), status
    settings = replace(Settings(), redis_url=redis_server.url)
    store_stats = EmbeddingCache.from_settings(settings).stats()
    assert store_stats["entries"] == 4, store_stats
    assert not (tmp_path / "model_dir" / "embeddings").exists()
