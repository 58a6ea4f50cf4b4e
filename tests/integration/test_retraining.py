"""The retraining loop end to end: a real Label Studio 1.23, a real redis-server, the backend
(gunicorn) and an RQ worker (`python -m backend worker`) sharing MODEL_DIR.

Annotations saved through Label Studio's API fire its webhook; the backend debounces them into a
training job on the RQ queue; the worker reads the annotations and images back from Label Studio
with the Personal Access Token, fine-tunes for a few steps, and publishes the project's first
version, which /versions lists and new predictions carry; then the "Start training" button trains
the next version from it.

The default weights here are tiny and predict nothing (mIoU 0 on anything), and a few training
steps cannot change that: every paired gain is 0, its interval [0, 0] is not below zero, and the
candidate is published: this test checks the loop, not learning (bench/learning_curve.py measures
that). No SAM checkpoint: start-up stays fast, and extreme
points go to the extreme-point model, whose version is the one that changes.
"""

from __future__ import annotations

import io
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from support.backend_server import BackendServer
from support.preannotation_project import brush
from support.processes import ServerProcess

from backend.networks.weights import ModelConfig, save_weights

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = REPO_ROOT / "examples" / "labeling_config_sam.xml"
WIDTH, HEIGHT = 96, 72
# One object per task: a bright rectangle (x0, y0, x1, y1) on a dark background.
OBJECTS = [(10, 8, 50, 40), (30, 20, 80, 60), (20, 30, 70, 66)]
JOB_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def blank_weights(tmp_path_factory) -> Path:
    """Tiny extreme-point weights whose refinement output is pushed far below 0: empty masks."""
    torch.manual_seed(0)
    config = ModelConfig(crop_size=64, refine_size=128, decoder_channels=16, refine_width=8)
    coarse, refine = config.build(pretrained=False)
    torch.nn.init.constant_(refine.residual.bias, -30.0)
    directory = tmp_path_factory.mktemp("blank_weights")
    save_weights(directory, coarse, refine, config, "blank-v0", {})
    return directory


@pytest.fixture(scope="module")
def retraining(label_studio, redis_server, blank_weights, tmp_path_factory):  # noqa: F811
    """(backend, worker log) with REDIS_URL: the backend queues jobs, the worker runs them."""
    workdir = tmp_path_factory.mktemp("retraining")
    training_env = {
        "REDIS_URL": redis_server.url, "EXTREME_WEIGHTS": str(blank_weights), "DEVICE": "cpu",
        "TRAIN_STEPS": "2", "TRAIN_THREADS": "1", "TRAIN_MIN_NEW_ANNOTATIONS": str(len(OBJECTS)), "TRAIN_DEBOUNCE_S": "1",
        "TRAIN_MIN_INSTANCES": str(len(OBJECTS)),
    }
    with pytest.MonkeyPatch.context() as patch:  # BackendServer passes its own environment on
        for key, value in training_env.items():
            patch.setenv(key, value)
        backend = BackendServer(workdir, workdir / "no-sam-checkpoint.pth", label_studio.url,
                                label_studio.personal_access_token)
    worker_env = {**os.environ, **training_env, "MODEL_DIR": str(backend.model_dir),
                  "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.personal_access_token}
    worker = ServerProcess("rq worker", [sys.executable, "-m", "backend", "worker"], worker_env, cwd=REPO_ROOT,
                           log_path=workdir / "worker.log")
    yield backend, worker
    worker.stop()
    backend.stop()


def png(box) -> bytes:
    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = (230, 200, 60)
    data = io.BytesIO()
    Image.fromarray(image).save(data, "PNG")
    return data.getvalue()


def extreme_points(box) -> list[dict]:
    x0, y0, x1, y1 = box
    points = [((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)]
    return [{"id": uuid.uuid4().hex[:10], "from_name": "extreme_points", "to_name": "image", "type": "keypointlabels",
             "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "is_positive": True,
             "value": {"x": 100 * x / WIDTH, "y": 100 * y / HEIGHT, "width": 0.3, "keypointlabels": ["Cat"]}}
            for x, y in points]


def wait_for_job(backend, project: int, worker, number: int) -> dict:
    """The project's ``number``-th job (1-based) once it has ended."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        jobs = requests.get(f"{backend.url}/jobs", params={"project": project}, auth=backend.auth, timeout=10).json()["jobs"]
        if len(jobs) >= number and jobs[number - 1]["state"] in ("finished", "failed"):
            return jobs[number - 1]
        time.sleep(1.0)
    pytest.fail(f"training job {number} did not end within {JOB_TIMEOUT_S:.0f} s; jobs: {jobs}\n{worker.log_tail()}")


def test_saved_annotations_retrain_the_project_and_predictions_carry_the_new_version(label_studio, retraining):
    backend, worker = retraining
    api = label_studio.api
    project = api.post("/api/projects/", json={"title": "retraining", "label_config": LABEL_CONFIG.read_text()})["id"]
    ml = api.post("/api/ml/", json={
        "project": project, "url": backend.url, "title": "segmentation assist", "is_interactive": True,
        "auth_method": "BASIC_AUTH", "basic_auth_user": backend.auth[0], "basic_auth_pass": backend.auth[1],
    })["id"]
    before = "segassist-blank-v0+nosam"
    assert api.get(f"/api/ml/{ml}")["model_version"] == before
    upload = api.post(f"/api/projects/{project}/import?return_task_ids=true", files={
        f"object{i}.png": (f"object{i}.png", png(box), "image/png") for i, box in enumerate(OBJECTS)})
    tasks = upload["task_ids"]
    assert len(tasks) == len(OBJECTS)
    for task, box in zip(tasks, OBJECTS):  # as an annotator's "Submit" saves them; each fires the webhook
        api.post(f"/api/tasks/{task}/annotations/", json={"result": [brush(box, WIDTH, HEIGHT)]})

    job = wait_for_job(backend, project, worker, 1)
    assert job["state"] == "finished", f"{job['error']}\n{worker.log_tail()}"
    assert job["trigger"] == f"{len(OBJECTS)} new annotations"
    assert job["result"]["published"] and job["result"]["parent"] == "blank-v0"
    assert job["result"]["tasks"] == len(OBJECTS) and job["result"]["decision"]["instances"] == len(OBJECTS)

    after = f"segassist-p{project}-v1+nosam"
    assert after in api.get(f"/api/ml/{ml}/versions")["versions"]  # Label Studio asks the backend's /versions
    answer = api.post(f"/api/ml/{ml}/interactive-annotating",
                      json={"task": tasks[0], "context": {"result": extreme_points(OBJECTS[0])}})
    assert "errors" not in answer, answer["errors"]
    assert answer["data"]["model_version"] == after

    # The "Start training" button: START_TRAINING (with Basic Auth) trains at once from the project's version.
    api.post(f"/api/ml/{ml}/train")
    job = wait_for_job(backend, project, worker, 2)
    assert job["state"] == "finished", f"{job['error']}\n{worker.log_tail()}"
    assert job["trigger"].startswith("START_TRAINING") and job["result"]["parent"] == f"p{project}-v1"
    assert job["result"]["version"] == f"p{project}-v2"
