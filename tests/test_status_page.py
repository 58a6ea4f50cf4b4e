"""``GET /``, the status page, and what ``/setup`` says about tools it cannot serve."""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from active_learning_fakes import write_fake_weights
from backend.components import Components
from backend.app import create_app
from backend.images import ImageLoader
from backend.settings import Settings
from backend.status_page import _bytes, _label_studio, render
from segmentation_fakes import PROJECT, BoxSegmenter, setup_body
from backend.segmenter_set import SegmenterSet

AUTH = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}
IMAGE_URL = "http://images.test/cat.png"


class Executor:
    def submit(self, job):
        pass

    def poll(self):
        pass


@pytest.fixture
def served(tmp_path, requests_mock):
    """(client, learning): the app without SAM, with active learning, a real image loader and Basic Auth."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(buffer, format="PNG")
    requests_mock.get(IMAGE_URL, content=buffer.getvalue())
    settings = Settings(model_dir=tmp_path / "model_dir", extreme_weights=write_fake_weights(tmp_path / "w", 0.5),
                        basic_auth_user="ls", basic_auth_pass="pw", label_studio_api_key="pat-never-shown")
    images = ImageLoader(settings)
    images.load(IMAGE_URL)
    images.load(IMAGE_URL)
    segmenters = SegmenterSet(extreme=BoxSegmenter("extreme-fake"), extreme_version="v1")
    learning = Components(settings, segmenters=segmenters, images=images, executor=Executor())
    app = create_app(components=learning)
    return app.test_client(), learning


def test_setup_names_the_tools_it_cannot_serve_and_logs_them(served, caplog):
    client, _ = served
    with caplog.at_level(logging.INFO):
        response = client.post("/setup", json=setup_body(), headers=AUTH)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["model_version"] == "segassist-base-v0+nosam"
    assert list(answer["tools_not_served"]) == ["click"]
    assert "SAM (set SAM_CHECKPOINT) is not loaded" in answer["tools_not_served"]["click"]
    assert 'meant for extreme points (4 clicks per object), rename it to start with "extreme"' in \
        answer["tools_not_served"]["click"]
    assert any(r.levelno == logging.WARNING and "project 7: tool click cannot be served" in r.getMessage()
               for r in caplog.records)


def test_setup_with_every_tool_served_says_so(tmp_path):
    segmenters = SegmenterSet(sam=BoxSegmenter("sam-fake"), extreme=BoxSegmenter("e"), sam_name="sam-fake",
                              extreme_version="v1")
    app = create_app(components=Components(replace(Settings(), model_dir=tmp_path), segmenters=segmenters,
                                           images=object(), executor=Executor()))
    assert app.test_client().post("/setup", json=setup_body()).get_json()["tools_not_served"] == {}


def test_status_page_shows_models_projects_jobs_and_caches(served):
    client, learning = served
    client.post("/setup", json=setup_body(), headers=AUTH)
    published = learning.jobs.create(PROJECT, "10 new annotations")
    learning.jobs.finish(published.id, {"published": True, "version": "p7-v1", "miou_before": 0.61,
                                        "miou_after": 0.72})
    kept = learning.jobs.create(PROJECT, "START_TRAINING")
    learning.jobs.finish(kept.id, {"published": False, "reason": "held-out mIoU fell from 0.7200 to 0.7000"})
    failed = learning.jobs.create(PROJECT, "START_TRAINING")
    learning.jobs.fail(failed.id, "LABEL_STUDIO_URL is not set")
    running = learning.jobs.create(PROJECT, "START_TRAINING")
    learning.jobs.mark_running(running.id, 123)
    learning.jobs.heartbeat(running.id, {"stage": "training", "fraction": 0.45, "message": "step 90/300"})
    preannotated = learning.jobs.create(PROJECT, "POST /jobs", "preannotate", {"tasks": [1], "scope": None})
    learning.jobs.finish(preannotated.id, {"total": 1, "predicted": 1})

    response = client.get("/", headers=AUTH)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "segassist-base-v0+nosam" in page and "loaded (v1)" in page
    assert "<td>cpu</td>" in page
    assert "not configured" in page  # Label Studio
    assert "<td>7</td>" in page and "click (click)" in page and "SAM (set SAM_CHECKPOINT) is not loaded" in page
    assert "<th>learned policies</th>" in page and "<td>none</td>" in page
    assert "published p7-v1 (held-out mIoU 0.61 -&gt; 0.72 on ? instances" in page
    assert "not published: held-out mIoU fell from 0.7200 to 0.7000" in page
    assert "failed: LABEL_STUDIO_URL is not set" in page
    assert "45% step 90/300" in page and "<td>running</td>" in page
    assert "<h2>Recent jobs</h2>" in page and "<td>training</td>" in page
    assert f"<td>{preannotated.id}</td><td>pre-annotation</td>" in page and "finished: predicted 1, total 1" in page
    assert "<td>decoded images</td><td>1</td><td>600 B</td><td>256 MiB</td><td>1</td><td>1</td><td>0.5</td>" in page
    assert "LABEL_STUDIO_URL is not set: images uploaded to Label Studio" in page
    assert "LABEL_STUDIO_API_KEY: a Personal Access Token" in page
    assert "<th>LABEL_STUDIO_API_KEY</th><td>set</td>" in page
    assert "pat-never-shown" not in page


def test_status_page_needs_basic_auth_when_on(served):
    client, _ = served
    assert client.get("/").status_code == 401


def test_render_escapes_every_value():
    page = render({"A <b>": {"key": "<script>alert(1)</script>"}, "Rows": [{"x": "&"}], "Empty": []})
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A &lt;b&gt;" in page and "<td>&amp;</td>" in page and "<p>none</p>" in page


def test_status_page_shows_the_embedding_store_and_the_queue_ahead(tmp_path):
    class Store:
        def stats(self):
            return {"store": "disk", "entries": 3, "hits": 9, "misses": 1, "hit_rate": 0.9}

    class Queue:
        def depth(self):
            return {"now": 1, "soon": 2, "total": 3}

    segmenters = SegmenterSet(sam=BoxSegmenter("sam-fake"), sam_name="sam-fake", embeddings=Store())
    settings = Settings(model_dir=tmp_path)
    app = create_app(components=Components(settings, segmenters=segmenters, images=object(), executor=Executor()),
                     embed_ahead=type("EmbedAhead", (), {"queue": Queue()})())
    page = app.test_client().get("/").get_data(as_text=True)
    assert "<td>SAM embeddings</td>" in page and "<td>disk</td>" in page and "<td>0.9</td>" in page
    assert "<td>decoded images</td><td>no figures reported</td>" in page  # a loader without stats()
    assert "now 1, soon 2, total 3" in page


def test_the_label_studio_row_says_what_an_error_means():
    refused = "error: Label Studio refused the access token (HTTP 401 on /api/current-user/whoami)"
    section = _label_studio(Settings(label_studio_url="http://ls.example:8080"), refused)
    assert section["connection"] == refused
    assert section["what it means"].startswith("the backend cannot use Label Studio until this is fixed")
    assert section["LABEL_STUDIO_API_KEY"] == "not set"


@pytest.mark.parametrize("count, shown", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                          (512 * 1024**2, "512 MiB"), (3 * 1024**3 + 1, "3 GiB")])
def test_cache_sizes_show_in_binary_units(count, shown):
    assert _bytes(count) == shown
