"""A training job's progress and outcome on Label Studio's model card (the ML backend's title and
description), and a Label Studio that is down or refuses never failing the job."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import requests
from active_learning_fakes import FakeReader, FakeTrainer, write_fake_weights

from backend.active_learning.layout import Layout
from backend.active_learning.ls_data import ProjectDataError
from backend.active_learning.model_card import ModelCard, base_title
from backend.active_learning.training_job import run_training_job
from backend.jobs.dispatcher import Dispatcher
from backend.jobs.store import FAILED, FINISHED, JobStore
from backend.label_studio_client import LabelStudioClient
from backend.ls_auth import LabelStudioAuth
from backend.settings import Settings

LS = "http://ls.test:8080"
KEY = "0123456789abcdef0123456789abcdef01234567"
OURS = {"id": 7, "url": "http://backend:9090", "project": 3, "title": "my model", "auth_method": "BASIC_AUTH",
        "basic_auth_user": "ls", "model_version": "segassist-base-v0+nosam",
        "extra_params": {"proposals": True}}
OTHER = {"id": 8, "url": "http://other:9090", "project": 3, "title": "someone else's", "auth_method": "NONE",
         "model_version": "yolo-3"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    weights = write_fake_weights(tmp_path / "default", 0.5, version="base-v0")
    return Settings(model_dir=tmp_path / "model_dir", extreme_weights=weights, train_steps=3,
                    label_studio_url=LS, label_studio_api_key=KEY)


class NoExecutor:
    """An executor with nothing to start: the dispatcher's round only reaps."""

    def poll(self) -> None:
        pass


def run_job(settings, trainer, reader=None):
    jobs = JobStore(Layout(settings.model_dir))
    job = jobs.create("3", "START_TRAINING (Label Studio's Start training)")
    client = LabelStudioClient(LS, LabelStudioAuth(LS, KEY), timeout_s=2.0)
    run_training_job(settings, job.id, trainer=trainer, reader=reader or FakeReader(),
                     card=ModelCard(settings, job, client=client))
    return jobs.get(job.id)


def label_studio(requests_mock, backends=(OURS, OTHER)):
    """Label Studio's ML backend API: the list, and PATCHes answered as LS does (the new fields, and
    the model version LS then read from the backend's /setup)."""
    requests_mock.get(f"{LS}/api/ml", json=list(backends))

    def patched(request, context):
        return {**OURS, **request.json(), "model_version": "segassist-p3-v1+nosam"}

    return requests_mock.patch(f"{LS}/api/ml/7", json=patched)


def test_progress_and_the_published_outcome_reach_the_card_with_the_new_model_version(settings, requests_mock):
    patch = label_studio(requests_mock)
    job = run_job(settings, FakeTrainer(gain=0.1))
    assert job.state == FINISHED and job.result["published"]
    bodies = [request.json() for request in patch.request_history]
    titles = [body["title"] for body in bodies]
    assert titles[0] == "my model — training 0%" and len(titles) >= 4  # one per stage, then the outcome
    assert titles[-1] == "my model — published p3-v1 (held-out mIoU 0.5 → 0.6)"
    assert "published p3-v1 (held-out mIoU 0.5 -> 0.6 on " in bodies[-1]["description"]
    assert job.id in bodies[-1]["description"]
    # Label Studio 1.23 checks the connection on every update: url, project, auth and extra params go
    # along, and an empty password keeps the one it stores.
    assert all(body["url"] == OURS["url"] and body["project"] == 3 and body["auth_method"] == "BASIC_AUTH"
               and body["basic_auth_user"] == "ls" and body["basic_auth_pass"] == ""
               and body["extra_params"] == {"proposals": True} for body in bodies)
    assert not any(request.url.startswith(f"{LS}/api/ml/8") for request in requests_mock.request_history)
    assert job.result["label_studio"] == {"model_card": "updated", "ml_backends": [7],
                                          "model_version": "segassist-p3-v1+nosam"}


class UnreadableProject:
    def read(self, project, progress):
        raise ProjectDataError("Label Studio answered HTTP 404 exporting project 3's annotations")


@pytest.mark.parametrize("trainer, reader, title, why", [
    (FakeTrainer(gain=-0.05), None, "my model — not published (base-v0 serves)",
     "held-out mIoU fell from 0.5000 (base-v0) to 0.4500"),
    (FakeTrainer(), FakeReader(task_ids=[1]), "my model — not published (base-v0 serves)",
     "annotate 1 more annotated task"),
    (FakeTrainer(), UnreadableProject(), "my model — training failed", "HTTP 404 exporting project 3"),
])
def test_not_published_and_failed_jobs_say_so_on_the_card(settings, requests_mock, trainer, reader, title, why):
    patch = label_studio(requests_mock)
    job = run_job(settings, trainer, reader)
    last = patch.request_history[-1].json()
    assert last["title"] == title
    assert why in last["description"]
    assert job.state == (FAILED if isinstance(reader, UnreadableProject) else FINISHED)


def test_a_job_whose_process_died_says_so_on_the_card_instead_of_its_last_progress(settings, requests_mock):
    patch = label_studio(requests_mock)
    jobs = JobStore(Layout(settings.model_dir))
    job = jobs.create("3", "START_TRAINING (Label Studio's Start training)")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # the job's process, killed mid-training
    gone.wait()
    jobs.mark_running(job.id, gone.pid)
    Dispatcher(jobs, NoExecutor(), settings=settings).tick()
    last = patch.request_history[-1].json()
    assert last["title"] == "my model — training failed" and f"pid {gone.pid}" in last["description"]
    assert jobs.get(job.id).state == FAILED and jobs.get(job.id).result["label_studio"]["model_card"] == "updated"


def test_label_studio_down_never_fails_the_job_and_the_result_says_why(settings, requests_mock, caplog):
    requests_mock.get(f"{LS}/api/ml", exc=requests.ConnectionError("refused"))
    job = run_job(settings, FakeTrainer(gain=0.1))
    assert job.state == FINISHED and job.result["published"]
    card = job.result["label_studio"]["model_card"]
    assert card.startswith("not updated: Label Studio at http://ls.test:8080 could not be reached") and KEY not in card
    # The first failure stops the progress updates; the outcome is tried once more.
    assert requests_mock.call_count == 2
    assert KEY not in caplog.text


def test_a_refused_update_or_no_backend_of_ours_is_recorded(settings, requests_mock):
    requests_mock.get(f"{LS}/api/ml", json=[OURS])
    requests_mock.patch(f"{LS}/api/ml/7", status_code=400, json={"validation_errors": {}})
    job = run_job(settings, FakeTrainer(gain=0.1))
    assert job.state == FINISHED
    assert "HTTP 400 while updating ML backend 7" in job.result["label_studio"]["model_card"]

    requests_mock.get(f"{LS}/api/ml", json=[OTHER])
    job = run_job(settings, FakeTrainer(gain=0.1))
    assert job.result["label_studio"]["model_card"] == (
        "not updated: no ML backend of project 3 has model version segassist-… (set ML_BACKEND_URL to name it by URL)")


def test_ml_backend_url_picks_the_backend_by_its_url(settings, requests_mock):
    elsewhere = {**OURS, "id": 9, "url": "http://old-host:9090/"}
    requests_mock.get(f"{LS}/api/ml", json=[OURS, elsewhere])
    patch = requests_mock.patch(f"{LS}/api/ml/9", json=elsewhere)
    job = run_job(replace(settings, ml_backend_url="http://old-host:9090"), FakeTrainer(gain=0.1))
    assert job.result["label_studio"]["ml_backends"] == [9] and patch.called
    assert not any(request.url.startswith(f"{LS}/api/ml/7") for request in requests_mock.request_history)


@pytest.mark.parametrize("title, base", [
    ("my model — training 45%", "my model"),
    ("my model — published p3-v2 (held-out mIoU 0.7 → 0.9)", "my model"),
    ("my model — not published (p3-v1 serves)", "my model"),
    ("my model — training failed", "my model"),
    ("my — own — title", "my — own — title"),
    ("", "segmentation assist"),
    (None, "segmentation assist"),
])
def test_the_status_replaces_the_previous_one_and_keeps_the_user_s_title(title, base):
    assert base_title(title) == base
