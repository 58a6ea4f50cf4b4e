"""A training job's outcome, read back through Label Studio's own API: a real Label Studio 1.23, the
backend (gunicorn, embedded jobs, no Redis) and annotations saved through the API.

Label Studio's *Start training* (``POST /api/ml/<id>/train``, which sends START_TRAINING with the
connection's Basic Auth) trains; the ML backend's title, description and ``model_version`` then say
what came of it: published with the held-out figures, or not and why. A refused token fails the
connection itself, with the reason, as the *Connect model* dialog shows it. A prompt the backend cannot
serve reaches the labeling page as a region with the reason as its note, not as an error (which the
page would not show).

Default weights as in test_retraining.py: tiny and predicting nothing, so any training is "not
worse" and gets published. No SAM checkpoint: start-up stays fast.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from support.backend_server import BackendServer
from support.ls_api import LabelStudioApiError
from support.preannotation_project import brush
from backend.label_studio_client import LabelStudioClient
from backend.ls_auth import LabelStudioAuth
from test_retraining import HEIGHT, LABEL_CONFIG, OBJECTS, WIDTH, blank_weights, png  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 240.0
TITLE = "segmentation assist"


@pytest.fixture(scope="module")
def backend(label_studio, blank_weights, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("model_card")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REDIS_URL", raising=False)
        for key, value in {"EXTREME_WEIGHTS": str(blank_weights), "TRAIN_STEPS": "2", "TRAIN_THREADS": "1",
                           "TRAIN_MIN_NEW_ANNOTATIONS": "1000",  # only Start training trains
                           "TRAIN_MIN_INSTANCES": str(len(OBJECTS))}.items():
            patch.setenv(key, value)
        server = BackendServer(workdir, workdir / "no-sam-checkpoint.pth", label_studio.url,
                               label_studio.personal_access_token)
    yield server
    server.stop()


def connect(api, backend, title: str, tasks: list) -> tuple[int, int, list[int]]:
    """(project, ML backend, task ids): a project with the model connected and one brush annotation
    saved on each of ``tasks`` (boxes of OBJECTS)."""
    project = api.post("/api/projects/", json={"title": title, "label_config": LABEL_CONFIG.read_text()})["id"]
    ml = api.post("/api/ml/", json={
        "project": project, "url": backend.url, "title": TITLE, "is_interactive": True,
        "auth_method": "BASIC_AUTH", "basic_auth_user": backend.auth[0], "basic_auth_pass": backend.auth[1],
    })["id"]
    upload = api.post(f"/api/projects/{project}/import?return_task_ids=true", files={
        f"object{i}.png": (f"object{i}.png", png(box), "image/png") for i, box in enumerate(OBJECTS)})
    for task, box in zip(upload["task_ids"], tasks):
        api.post(f"/api/tasks/{task}/annotations/", json={"result": [brush(box, WIDTH, HEIGHT)]})
    return project, ml, upload["task_ids"]


def start_training_and_wait(api, backend, project: int, ml: int) -> dict:
    api.post(f"/api/ml/{ml}/train")  # Label Studio's "Start Training"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        jobs = requests.get(f"{backend.url}/jobs", params={"project": project}, auth=backend.auth, timeout=10).json()
        ended = [job for job in jobs["jobs"] if job["state"] in ("finished", "failed")]
        if ended and "label_studio" in ended[-1]["result"]:  # the card is written after the job's end
            return ended[-1]
        time.sleep(1.0)
    pytest.fail(f"no training job of project {project} ended within {JOB_TIMEOUT_S:.0f} s: {jobs}")


def test_a_published_version_shows_on_the_ml_backend_in_label_studio(label_studio, backend):
    api = label_studio.api
    project, ml, tasks = connect(api, backend, "model card: published", OBJECTS)
    assert api.get(f"/api/ml/{ml}")["model_version"] == "segassist-blank-v0+nosam"

    job = start_training_and_wait(api, backend, project, ml)
    assert job["state"] == "finished" and job["result"]["published"], job
    version = f"p{project}-v1"
    card = api.get(f"/api/ml/{ml}")  # Label Studio's own record of the ML backend
    before, after = job["result"]["miou_before"], job["result"]["miou_after"]
    assert card["title"] == f"{TITLE} — published {version} (held-out mIoU {before} → {after})"
    assert f"published {version} (held-out mIoU {before} -> {after} on " in card["description"]
    assert card["model_version"] == f"segassist-{version}+nosam" and card["state"] == "CO"
    assert card["basic_auth_pass_is_set"]  # the updates kept the connection's password
    assert job["result"]["label_studio"] == {"model_card": "updated", "ml_backends": [ml],
                                             "model_version": f"segassist-{version}+nosam"}
    # The project still takes its predictions from this backend (Label Studio follows the new title).
    assert api.get(f"/api/projects/{project}")["model_version"] == card["title"]
    # Predictions Label Studio stores from now on carry the new version.
    answer = api.post(f"/api/ml/{ml}/interactive-annotating", json={"task": tasks[0], "context": {"result": []}})
    assert answer["data"]["model_version"] == f"segassist-{version}+nosam"


class SetupRecorder(BaseHTTPRequestHandler):
    """An ML backend that answers /health and /setup and keeps each /setup's body."""
    setups: list[dict] = []

    def do_GET(self):
        self.answer({"status": "UP", "model_class": "SetupRecorder"})

    def do_POST(self):
        self.setups.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.answer({"model_version": "recorder-v1"})

    def answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_a_card_update_keeps_the_extra_params_in_every_setup_label_studio_sends(label_studio):
    """Label Studio checks the connection on each PATCH by calling /setup with the PATCH's body: an
    update without the extra params would store the project with none (proposals off) meanwhile."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SetupRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api, url = label_studio.api, f"http://127.0.0.1:{server.server_address[1]}"
        project = api.post("/api/projects/", json={"title": "extra params kept", "label_config": LABEL_CONFIG.read_text()})
        extra = {"proposals": True, "proposal_threshold": 0.4}
        api.post("/api/ml/", json={"project": project["id"], "url": url, "title": TITLE, "extra_params": extra})
        client = LabelStudioClient(label_studio.url, LabelStudioAuth(label_studio.url, label_studio.personal_access_token),
                                   timeout_s=30.0)
        SetupRecorder.setups.clear()
        [listed] = client.ml_backends(str(project["id"]))
        client.update_ml_backend(listed, {"title": f"{TITLE} — training 0%"})
        assert len(SetupRecorder.setups) >= 2  # the listing's, the update's check and its state update
        assert all(setup["extra_params"] == extra for setup in SetupRecorder.setups), SetupRecorder.setups
    finally:
        server.shutdown()


def test_a_job_that_cannot_train_says_why_on_the_ml_backend(label_studio, backend):
    api = label_studio.api
    project, ml, _ = connect(api, backend, "model card: not published", OBJECTS[:1])  # one annotated task
    job = start_training_and_wait(api, backend, project, ml)
    assert job["state"] == "finished" and not job["result"]["published"], job
    assert "annotate 1 more annotated task" in job["result"]["reason"], job
    card = api.get(f"/api/ml/{ml}")
    assert card["title"] == f"{TITLE} — not published (blank-v0 serves)"
    assert "not published: not trained: 1 annotated task(s) with 1 instance(s)" in card["description"]
    assert card["model_version"] == "segassist-blank-v0+nosam"  # nothing new serves


def test_a_refused_token_fails_the_connection_with_the_reason(label_studio, tmp_path):
    refused = BackendServer(tmp_path, tmp_path / "no-sam-checkpoint.pth", label_studio.url, "not-a-valid-token")
    try:
        api = label_studio.api
        project = api.post("/api/projects/", json={"title": "refused token", "label_config": LABEL_CONFIG.read_text()})
        body = {"project": project["id"], "url": refused.url, "title": TITLE, "is_interactive": True,
                "auth_method": "BASIC_AUTH", "basic_auth_user": refused.auth[0], "basic_auth_pass": refused.auth[1]}
        # The backend's first check of the token may still be under way: the dialog is tried again as a user would.
        deadline = time.monotonic() + 30
        while True:
            try:
                api.post("/api/ml/", json=body)
            except LabelStudioApiError as error:
                message = str(error)
                break
            assert time.monotonic() < deadline, "Label Studio connected a backend whose token it refuses"
            time.sleep(1.0)
        assert "HTTP 400" in message and "424 Client Error" in message
        assert "LABEL_STUDIO_API_KEY" in message and "not-a-valid-token" not in message
    finally:
        refused.stop()


def test_a_prompt_that_cannot_be_served_reaches_the_page_with_its_reason(label_studio, backend):
    """No SAM here, so the config's click tool cannot be served: the page gets the click back with a
    note, where an error would reach it as ``{"errors": …}``, which it does not show."""
    api = label_studio.api
    project, ml, tasks = connect(api, backend, "model card: prompt not served", [])
    click = {"id": "click1", "from_name": "clicks", "to_name": "image", "type": "keypointlabels",
             "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "is_positive": True,
             "value": {"x": 40.0, "y": 40.0, "width": 0.5, "keypointlabels": ["Cat"]}}
    answer = api.post(f"/api/ml/{ml}/interactive-annotating", json={"task": tasks[0], "context": {"result": [click]}})
    assert "errors" not in answer, answer
    [echo] = answer["data"]["result"]
    assert echo["id"] == "click1" and echo["value"] == click["value"]
    assert echo["meta"]["text"][0].startswith("Not segmented: no segmenter for a points prompt")
