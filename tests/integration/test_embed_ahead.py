"""Embedding ahead against a real Label Studio 1.23: tasks imported and never opened answer their
first SAM prompt from the store, and still do after the backend restarts.

The backend runs in this process (a threaded WSGI server on localhost), so a tiny SAM of the real
architecture can stand in for ViT-B and its encoder calls can be counted. Label Studio is real:
its import webhook (TASKS_CREATED) queues the first image, its interactive-annotating endpoint
forwards the prompts, and its task API tells the backend the next unlabeled tasks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from preannotation_project import LABEL_CONFIG, image_uri, object_box, rectangle
from processes import free_port
from werkzeug.serving import make_server

from backend.active_learning.service import ActiveLearning
from backend.app import create_app
from backend.images import ImageLoader
from backend.segmenter_set import SegmenterSet
from backend.segmenters.embedding_cache import EmbeddingCache
from backend.segmenters.sam import SamSegmenter, SegmentAnything
from backend.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

WIDTH, HEIGHT = 120, 90
TIMEOUT_S = 60.0


class InProcessBackend:
    """The backend app with a tiny SAM, served on a free port; ``encoder_runs`` counts embeddings."""

    def __init__(self, settings: Settings, port: int | None = None):
        from test_sam import tiny_sam

        sam = tiny_sam()
        self.encoder_runs: list[int] = []
        sam.image_encoder.register_forward_hook(lambda module, args, output: self.encoder_runs.append(1))
        cache = EmbeddingCache.from_settings(settings, namespace="tiny-sam")
        segmenter = SamSegmenter(SegmentAnything(sam), "sam-tiny", cache)
        segmenters = SegmenterSet(sam=segmenter, sam_name="sam-tiny", embeddings=cache)
        self.app = create_app(settings, segmenters=segmenters, images=ImageLoader(settings),
                              events=ActiveLearning(settings))
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


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
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
        assert backend.encoder_runs == [1]
        prompt(api, ml["id"], tasks[0], 0)
        assert backend.encoder_runs == [1]  # the first prompt came from the store

        # That prompt queued the next unlabeled tasks, read from Label Studio: 2 and 4, not 3.
        wait_until(lambda: backend.embed_status["embedded"] == 3, "the next tasks were embedded")
        assert len(backend.encoder_runs) == 3
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
