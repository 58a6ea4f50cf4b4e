"""End to end against a real Label Studio 1.23: the calls its buttons and smart tools make.

A project with ``examples/labeling_config_sam.xml`` is connected to the backend (Basic Auth); a photo
is uploaded through Label Studio, so the backend must download it with the Personal Access Token;
a detector-style rectangle prediction on it is the batch prompt. SAM has random weights (see
conftest.py), so the tests check the protocol, sizes and storage, not mask quality.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import skimage.data
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from PIL import Image

pytestmark = pytest.mark.integration

LABEL_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "labeling_config_sam.xml"
PHOTO = skimage.data.chelsea()  # (300, 451, 3): a cat; not square, so width/height mix-ups show
HEIGHT, WIDTH = PHOTO.shape[:2]
# The cat's head and body, in natural-image pixels (x0, y0, x1, y1).
CAT_BOX = (110.0, 40.0, 360.0, 290.0)


@dataclass(frozen=True)
class Connected:
    project: int
    ml_backend: int
    model_version: str
    task: int


def _percent_x(x_px: float) -> float:
    return 100.0 * x_px / WIDTH


def _percent_y(y_px: float) -> float:
    return 100.0 * y_px / HEIGHT


def _region(from_name: str, region_type: str, value: dict, **extra) -> dict:
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": from_name,
        "to_name": "image",
        "type": region_type,
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": value,
        **extra,
    }


def rectangle(box: tuple[float, float, float, float]) -> dict:
    x0, y0, x1, y1 = box
    value = {"x": _percent_x(x0), "y": _percent_y(y0), "width": _percent_x(x1 - x0),
             "height": _percent_y(y1 - y0), "rotation": 0, "rectanglelabels": ["Cat"]}
    return _region("box", "rectanglelabels", value)


def keypoint(tool: str, x: float, y: float, positive: bool = True) -> dict:
    value = {"x": _percent_x(x), "y": _percent_y(y), "width": 0.3, "keypointlabels": ["Cat"]}
    return _region(tool, "keypointlabels", value, is_positive=positive)


def brush_masks(regions: list[dict]) -> list[np.ndarray]:
    """The (H, W) uint8 masks of the brush regions, decoded as PROTOCOL.md says; checks their frame."""
    masks = []
    for region in regions:
        if region.get("type") != "brushlabels":
            continue
        assert (region["original_width"], region["original_height"]) == (WIDTH, HEIGHT)
        assert region["from_name"] == "mask" and region["value"]["brushlabels"] == ["Cat"]
        flat = decode_rle(region["value"]["rle"])
        assert flat.size == HEIGHT * WIDTH * 4, f"RLE decodes to {flat.size} values, not {HEIGHT}x{WIDTH}x4"
        masks.append(flat.reshape(HEIGHT, WIDTH, 4)[:, :, 3])
    return masks


@pytest.fixture(scope="module")
def connected(label_studio, backend) -> Connected:
    """A project with the example config, the backend connected, and one uploaded photo with a
    rectangle prediction."""
    api = label_studio.api
    project = api.post(
        "/api/projects/", json={"title": "segmentation assist", "label_config": LABEL_CONFIG.read_text()}
    )
    # What "Connect Model" in the project's Model settings sends.
    ml = api.post("/api/ml/", json={
        "project": project["id"],
        "url": backend.url,
        "title": "segmentation assist",
        "is_interactive": True,
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": backend.auth[0],
        "basic_auth_pass": backend.auth[1],
    })
    ml = api.get(f"/api/ml/{ml['id']}")
    assert ml["readable_state"] == "Connected", f"backend not connected: {ml.get('error_message')}"
    jpeg = io.BytesIO()
    Image.fromarray(PHOTO).save(jpeg, "JPEG", quality=95)
    upload = api.post(
        f"/api/projects/{project['id']}/import?return_task_ids=true",
        files={"chelsea.jpg": ("chelsea.jpg", jpeg.getvalue(), "image/jpeg")},
    )
    (task,) = upload["task_ids"]
    assert api.get(f"/api/tasks/{task}")["data"]["image"].startswith("/data/upload/")
    # A detector's box, the way pre-annotation prompts arrive.
    api.post("/api/predictions/", json={"task": task, "model_version": "detector", "result": [rectangle(CAT_BOX)]})
    return Connected(project=project["id"], ml_backend=ml["id"], model_version=ml["model_version"], task=task)


def test_backend_serves_sam_with_the_connection_model_version(backend, connected):
    status = requests.get(f"{backend.url}/health", auth=backend.auth, timeout=10).json()
    assert "sam" in status["loaded"], status
    assert connected.model_version == status["model_version"]


def test_health_says_whether_label_studio_accepts_the_token(label_studio, backend):
    from dataclasses import replace

    from backend.label_studio_check import OK, LabelStudioCheck
    from backend.settings import Settings

    deadline = time.monotonic() + 10
    while (answer := requests.get(f"{backend.url}/health", auth=backend.auth, timeout=10).json()["label_studio"]) \
            != OK and answer.startswith("checking") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answer == OK
    revoked = label_studio.personal_access_token[:-4] + "AAAA"  # a PAT whose signature Label Studio refuses
    refused = LabelStudioCheck(replace(Settings(), label_studio_url=label_studio.url, label_studio_api_key=revoked))
    assert refused.check().startswith("error: Label Studio rejected LABEL_STUDIO_API_KEY (HTTP 401")


def test_retrieve_predictions_stores_a_brush_mask_of_the_image_size(label_studio, connected):
    api = label_studio.api
    # The Data Manager's "Retrieve Predictions" action on the selected task.
    api.post(
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={connected.project}",
        json={"selectedItems": {"all": False, "included": [connected.task]}},
    )
    predictions = api.get(f"/api/predictions/?task={connected.task}")
    ours = [p for p in predictions if p["model_version"] == connected.model_version]
    versions = [p["model_version"] for p in predictions]
    assert len(ours) == 1, f"expected one prediction of {connected.model_version}, got {versions}"
    assert 0.0 <= ours[0]["score"] <= 1.0
    (mask,) = brush_masks(ours[0]["result"])
    assert mask.shape == (HEIGHT, WIDTH)
    assert set(np.unique(mask)) <= {0, 255} and mask.any()


@pytest.mark.parametrize(
    "context",
    [
        pytest.param([keypoint("clicks", 235, 160)], id="click"),
        pytest.param(
            [keypoint("clicks", 235, 160), keypoint("clicks", 40, 40, positive=False)], id="clicks+negative"
        ),
        pytest.param([rectangle(CAT_BOX)], id="rectangle"),
        pytest.param(
            [keypoint("extreme_points", x, y) for x, y in [(230, 42), (240, 288), (112, 200), (358, 150)]],
            id="extreme-points",
        ),
    ],
)
def test_interactive_annotating_answers_with_a_mask(label_studio, connected, context):
    # What the labeling page posts after each region drawn with a smart tool.
    answer = label_studio.api.post(
        f"/api/ml/{connected.ml_backend}/interactive-annotating",
        json={"task": connected.task, "context": {"result": context}},
    )
    assert "errors" not in answer, answer["errors"]
    assert answer["data"]["model_version"] == connected.model_version
    (mask,) = brush_masks(answer["data"]["result"])
    assert mask.any()


def test_saved_annotation_reaches_the_backend_webhook(label_studio, backend, connected):
    api = label_studio.api
    hooks = api.get(f"/api/webhooks/?project={connected.project}")
    assert f"{backend.url}/webhook" in [hook["url"] for hook in hooks], "Label Studio made no webhook for the backend"
    square = np.zeros((HEIGHT, WIDTH), np.uint8)
    square[100:200, 150:300] = 255
    brush = _region("mask", "brushlabels", {"format": "rle", "rle": mask2rle(square), "brushlabels": ["Cat"]})
    annotation = api.post(f"/api/tasks/{connected.task}/annotations/", json={"result": [brush]})
    created = recorded_events(backend.model_dir / "events.jsonl", "ANNOTATION_CREATED")
    assert created, "the backend recorded no ANNOTATION_CREATED event"
    assert created[-1]["annotation_ids"] == [annotation["id"]]
    assert created[-1]["project"] == connected.project


def recorded_events(events_file: Path, action: str, timeout_s: float = 10.0) -> list[dict]:
    """The backend's recorded events of ``action`` (one JSON object per line), waiting up to
    ``timeout_s`` for the first: Label Studio without Redis sends webhooks before it answers the
    API call, but a Label Studio with a job queue would send them later."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = events_file.read_text().splitlines() if events_file.exists() else []
        events = [event for event in map(json.loads, lines) if event["action"] == action]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.2)
