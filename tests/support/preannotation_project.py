"""A Label Studio project for pre-annotation tests and the throughput bench: the example labeling
config, the backend connected with ``preannotate_on_import``, and tasks imported with a detector's
rectangle prediction each (images as data: URIs, so no upload is involved)."""

from __future__ import annotations

import base64
import io
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_CONFIG = REPO_ROOT / "examples" / "labeling_config.xml"


def object_box(index: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Task ``index``'s object (x0, y0, x1, y1): a rectangle that moves from task to task."""
    x0, y0 = (index * 7) % (width // 3), (index * 5) % (height // 3)
    return x0, y0, x0 + width // 2, y0 + height // 2


def image_uri(box, width: int, height: int, others=()) -> str:
    """A PNG data URI: a dark image holding a yellow rectangle ``box`` and ``others``, (box, RGB) pairs."""
    image = np.full((height, width, 3), 40, np.uint8)
    for (x0, y0, x1, y1), colour in [(box, (230, 200, 60)), *others]:
        image[y0:y1, x0:x1] = colour
    data = io.BytesIO()
    Image.fromarray(image).save(data, "PNG")
    return "data:image/png;base64," + base64.b64encode(data.getvalue()).decode()


def rectangle(box, width: int, height: int) -> dict:
    x0, y0, x1, y1 = box
    return {"from_name": "box", "to_name": "image", "type": "rectanglelabels", "original_width": width,
            "original_height": height, "image_rotation": 0,
            "value": {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
                      "height": 100 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": ["Cat"]}}


def brush(box, width: int, height: int, label: str = "Cat") -> dict:
    """A brush region (fresh id) filling ``box`` on a ``width`` x ``height`` image, as an annotation holds it."""
    from label_studio_sdk.converter.brush import mask2rle

    mask = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return {"id": uuid.uuid4().hex[:10], "from_name": "mask", "to_name": "image", "type": "brushlabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask2rle(mask), "brushlabels": [label]}}


def connect_project(api, backend, title: str, preannotate_on_import: bool = True) -> tuple[int, dict]:
    """(project id, ML backend record): a new project with the backend connected (Basic Auth) and
    ``{"preannotate_on_import": <preannotate_on_import>}`` as its extra params."""
    project = api.post("/api/projects/", json={"title": title, "label_config": LABEL_CONFIG.read_text()})["id"]
    ml = api.post("/api/ml/", json={
        "project": project, "url": backend.url, "title": "segmentation assist", "is_interactive": True,
        "auth_method": "BASIC_AUTH", "basic_auth_user": backend.auth[0], "basic_auth_pass": backend.auth[1],
        "extra_params": {"preannotate_on_import": preannotate_on_import},
    })
    ml = api.get(f"/api/ml/{ml['id']}")
    assert ml["readable_state"] == "Connected", f"backend not connected: {ml.get('error_message')}"
    return project, ml


def import_boxed_tasks(api, project: int, count: int, width: int, height: int, offset: int = 0) -> list[int]:
    """Import ``count`` tasks, each with a detector's rectangle prediction around its object; their
    ids. Tasks ``offset`` to ``offset + count`` of the sequence (each a different picture)."""
    tasks = [{"data": {"image": image_uri(object_box(i, width, height), width, height)},
              "predictions": [{"model_version": "detector-v1", "score": 0.5,
                               "result": [rectangle(object_box(i, width, height), width, height)]}]}
             for i in range(offset, offset + count)]
    return api.post(f"/api/projects/{project}/import?return_task_ids=true", json=tasks)["task_ids"]


def predictions_by_task(api, project: int, model_version: str) -> dict[int, list[dict]]:
    """task id -> the project's predictions of ``model_version`` on it."""
    found: dict[int, list[dict]] = {}
    for prediction in api.get(f"/api/predictions/?project={project}"):
        if prediction["model_version"] == model_version:
            found.setdefault(prediction["task"], []).append(prediction)
    return found


def wait_until_predicted(api, project: int, tasks: list[int], model_version: str, timeout_s: float,
                         on_timeout=lambda: "", hopeless=lambda: None) -> float:
    """Seconds until every task holds a prediction of ``model_version``; AssertionError after
    ``timeout_s``, or as soon as ``hopeless()`` returns a reason (e.g. the job ended with failures)."""
    started = time.monotonic()
    while True:
        waiting = set(tasks) - set(predictions_by_task(api, project, model_version))
        if not waiting:
            return time.monotonic() - started
        reason = hopeless()
        if reason or time.monotonic() - started > timeout_s:
            raise AssertionError(f"{len(waiting)} of {len(tasks)} tasks without a {model_version} prediction after "
                                 f"{time.monotonic() - started:.0f} s: {reason or 'timed out'}\n{on_timeout()}")
        time.sleep(0.5)
