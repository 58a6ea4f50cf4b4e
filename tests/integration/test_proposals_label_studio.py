"""Proposals end to end against a real Label Studio 1.23 (project option "proposals"): tasks imported
with no prompt at all, a handful annotated through the API (brush masks, and one image with nothing
on it annotated empty: a true negative), *Start training*; the job trains the project's proposal
model (a few steps: PROPOSALS_STEPS), publishes it as a new version, and the follow-up pre-annotates
the unlabeled tasks with it: each then holds exactly one prediction, of the new version, with a mask.

A second project has two labels (a yellow "Cat" and a blue "Car" rectangle in every image): the job
fits the labeller on the annotated masks, and each found object is labelled by its look.

Embedded worker, no SAM checkpoint: each found object's box goes to the extreme-point model's box
mode. The images are trivially easy (bright rectangles on a dark background), so that a few
training steps find the objects; this checks the loop, bench/proposals.py measures the learning.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from label_studio_sdk.converter.brush import decode_rle
from support.backend_server import BackendServer
from support.preannotation_project import LABEL_CONFIG, brush, image_uri, object_box, predictions_by_task

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 96, 72
ANNOTATED, UNLABELED = 7, 3
TIMEOUT_S = 900.0


@pytest.fixture(scope="module")
def backend(label_studio, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("proposals")
    settings = {"PROPOSALS_STEPS": "20", "PROPOSALS_MIN_TASKS": str(ANNOTATED + 1), "TRAIN_STEPS": "2",
                "TRAIN_THREADS": "2", "TRAIN_MIN_NEW_ANNOTATIONS": "1000", "DEVICE": "cpu"}
    with pytest.MonkeyPatch.context() as patch:  # BackendServer passes its own environment on
        patch.delenv("REDIS_URL", raising=False)
        for key, value in settings.items():
            patch.setenv(key, value)
        server = BackendServer(workdir, workdir / "no-sam-checkpoint.pth", label_studio.url,
                               label_studio.personal_access_token)
    yield server
    server.stop()


def empty_image_uri() -> str:
    return image_uri((0, 0, 0, 0), WIDTH, HEIGHT)


def health_proposals(backend, project: int) -> str:
    return requests.get(f"{backend.url}/health", auth=backend.auth, timeout=10).json()["proposals"][str(project)]


def training_job(backend, project: int) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        jobs = requests.get(f"{backend.url}/jobs", params={"project": project, "type": "train"}, auth=backend.auth,
                            timeout=10).json()["jobs"]
        if jobs and jobs[0]["state"] in ("finished", "failed"):
            return jobs[0]
        assert time.monotonic() < deadline, f"{jobs}\n{backend.process.log_tail()}"
        time.sleep(1.0)


def wait_for_predictions(api, project: int, tasks: list[int], version: str, backend) -> dict[int, list[dict]]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        ours = predictions_by_task(api, project, version)
        if set(ours) >= set(tasks):
            return ours
        assert time.monotonic() < deadline, f"predictions of {version}: {sorted(ours)}\n{backend.process.log_tail()}"
        time.sleep(1.0)


def proposals_project(api, backend, title: str) -> tuple[int, int]:
    """(project id, ML backend id): a new project with the backend connected and option proposals on."""
    project = api.post("/api/projects/", json={"title": title, "label_config": LABEL_CONFIG.read_text()})["id"]
    ml = api.post("/api/ml/", json={
        "project": project, "url": backend.url, "title": "segmentation assist", "is_interactive": True,
        "auth_method": "BASIC_AUTH", "basic_auth_user": backend.auth[0], "basic_auth_pass": backend.auth[1],
        "extra_params": {"proposals": True},
    })["id"]
    return project, ml


def region_mask(region) -> np.ndarray:
    return decode_rle(region["value"]["rle"]).reshape(HEIGHT, WIDTH, 4)[:, :, 3] > 0


def test_annotated_tasks_train_proposals_and_the_unlabeled_tasks_get_masks_of_the_new_version(label_studio, backend):
    api = label_studio.api
    project, ml = proposals_project(api, backend, "proposals")
    before = api.get(f"/api/ml/{ml}")["model_version"]
    assert f"at least {ANNOTATED + 1} annotated tasks" in health_proposals(backend, project)

    boxes = [object_box(i, WIDTH, HEIGHT) for i in range(ANNOTATED + UNLABELED)]
    imported = [{"data": {"image": image_uri(box, WIDTH, HEIGHT)}} for box in boxes]
    imported.append({"data": {"image": empty_image_uri()}})
    tasks = api.post(f"/api/projects/{project}/import?return_task_ids=true", json=imported)["task_ids"]
    annotated, unlabeled, negative = tasks[:ANNOTATED], tasks[ANNOTATED:-1], tasks[-1]
    for task, box in zip(annotated, boxes):
        api.post(f"/api/tasks/{task}/annotations/", json={"result": [brush(box, WIDTH, HEIGHT)]})
    api.post(f"/api/tasks/{negative}/annotations/", json={"result": []})  # nothing there: a true negative

    api.post(f"/api/ml/{ml}/train")  # the "Start training" button
    job = training_job(backend, project)
    assert job["state"] == "finished", f"{job['error']}\n{backend.process.log_tail()}"
    proposals = job["result"]["proposals"]
    assert proposals["published"], proposals
    assert proposals["annotated_tasks"] == ANNOTATED + 1 and proposals["negative_tasks"] == 1
    assert 0 < proposals["threshold"] < 1 and proposals["heldout"]["recall"] > 0
    version = f"segassist-{proposals['version']}+nosam"
    assert version != before and version in api.get(f"/api/ml/{ml}/versions")["versions"]
    assert health_proposals(backend, project).startswith(f"from {proposals['version']}, threshold")

    ours = wait_for_predictions(api, project, unlabeled, version, backend)
    assert job["result"]["preannotation_job"]
    for task in unlabeled:
        (prediction,) = ours[task]
        (region,) = prediction["result"]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Cat"]
        assert 0 < prediction["score"] <= 1
        mask = region_mask(region)
        x0, y0, x1, y1 = boxes[tasks.index(task)]
        inside = mask[y0:y1, x0:x1].sum() / mask.sum()
        assert mask.any() and inside > 0.5, inside
    assert all(task in unlabeled for task in ours)  # annotated tasks were left alone

    # A pre-annotation job asked for now finds every unlabeled task already predicted with this version.
    answer = requests.post(f"{backend.url}/jobs", json={"type": "preannotate", "project": project,
                                                         "scope": "unlabeled"}, auth=backend.auth, timeout=10)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 120
    while (job := requests.get(f"{backend.url}/jobs/{answer.json()['job']['id']}", auth=backend.auth,
                               timeout=10).json())["state"] not in ("finished", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["result"]["already_predicted"] == UNLABELED, job


BLUE = (60, 140, 230)


def two_objects(index: int) -> dict[str, tuple[int, int, int, int]]:
    """Task ``index``'s two objects, apart: a yellow "Cat" rectangle on the left, a blue "Car" one on the right."""
    cat_x, cat_y, car_x, car_y = 2 + index % 6, 4 + index % 5, 52 + index % 5, 36 - index % 4
    return {"Cat": (cat_x, cat_y, cat_x + 30, cat_y + 26), "Car": (car_x, car_y, car_x + 34, car_y + 28)}


def test_with_two_labels_each_found_object_gets_the_label_its_look_says(label_studio, backend):
    """The labeller (fitted by the job on the annotated masks) labels each proposal from its mask."""
    api = label_studio.api
    project, ml = proposals_project(api, backend, "proposals, two labels")
    objects = [two_objects(i) for i in range(ANNOTATED + UNLABELED)]
    imported = [{"data": {"image": image_uri(o["Cat"], WIDTH, HEIGHT, [(o["Car"], BLUE)])}} for o in objects]
    imported.append({"data": {"image": empty_image_uri()}})
    tasks = api.post(f"/api/projects/{project}/import?return_task_ids=true", json=imported)["task_ids"]
    annotated, unlabeled, negative = tasks[:ANNOTATED], tasks[ANNOTATED:-1], tasks[-1]
    for task, o in zip(annotated, objects):
        api.post(f"/api/tasks/{task}/annotations/", json={"result": [brush(box, WIDTH, HEIGHT, label)
                                                                     for label, box in o.items()]})
    api.post(f"/api/tasks/{negative}/annotations/", json={"result": []})

    api.post(f"/api/ml/{ml}/train")
    job = training_job(backend, project)
    assert job["state"] == "finished", f"{job['error']}\n{backend.process.log_tail()}"
    proposals = job["result"]["proposals"]
    assert proposals["published"] and proposals["training"]["labels_from"] == "labeller (object masks)", proposals

    ours = wait_for_predictions(api, project, unlabeled, f"segassist-{proposals['version']}+nosam", backend)
    labelled = []
    for task in unlabeled:
        (prediction,) = ours[task]
        o = objects[tasks.index(task)]
        for region in prediction["result"]:
            mask = region_mask(region)
            (label,) = region["value"]["brushlabels"]
            lies_on = max(o, key=lambda name: mask[o[name][1]:o[name][3], o[name][0]:o[name][2]].sum())
            labelled.append((label, lies_on))
    assert labelled and all(label == lies_on for label, lies_on in labelled), labelled
    assert {label for label, _ in labelled} == {"Cat", "Car"}, labelled
