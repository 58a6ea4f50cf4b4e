"""A polygon project against a real Label Studio 1.23: "Retrieve predictions" on a task whose
imported prediction holds a cat's four extreme points stores ``polygonlabels`` regions (through
Label Studio's prediction validation, which tests/support/ls_server.py switches on)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image
from test_label_studio import CAT_BOX, HEIGHT, PHOTO, WIDTH, keypoint

from backend.polygons import polygon_mask

pytestmark = pytest.mark.integration

LABEL_CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "labeling_config_polygons.xml").read_text()
CAT_EXTREME_POINTS = [(230, 42), (240, 288), (112, 200), (358, 150)]  # top, bottom, left, right


def test_retrieve_predictions_stores_polygons(label_studio, backend):
    api = label_studio.api
    project = api.post("/api/projects/", json={"title": "polygon project", "label_config": LABEL_CONFIG})
    ml = api.post("/api/ml/", json={
        "project": project["id"], "url": backend.url, "title": "segmentation assist", "is_interactive": True,
        "auth_method": "BASIC_AUTH", "basic_auth_user": backend.auth[0], "basic_auth_pass": backend.auth[1],
        "extra_params": {"policies": {"*": {"min_island_px": 50}}},
    })
    ml = api.get(f"/api/ml/{ml['id']}")
    assert ml["readable_state"] == "Connected", f"backend not connected: {ml.get('error_message')}"
    jpeg = io.BytesIO()
    Image.fromarray(PHOTO).save(jpeg, "JPEG", quality=95)
    (task,) = api.post(f"/api/projects/{project['id']}/import?return_task_ids=true",
                       files={"chelsea.jpg": ("chelsea.jpg", jpeg.getvalue(), "image/jpeg")})["task_ids"]
    points = [keypoint("extreme_points", x, y) for x, y in CAT_EXTREME_POINTS]
    api.post("/api/predictions/", json={"task": task, "model_version": "clicked", "result": points})

    api.post(f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
             json={"selectedItems": {"all": False, "included": [task]}})

    ours = [p for p in api.get(f"/api/predictions/?task={task}") if p["model_version"] == ml["model_version"]]
    assert len(ours) == 1, f"no prediction of {ml['model_version']} stored"
    [prediction] = ours
    regions = prediction["result"]
    assert regions and {r["type"] for r in regions} == {"polygonlabels"}
    assert LabelInterface(LABEL_CONFIG).validate_prediction(prediction, return_errors=True) == []
    assert 0 < prediction["score"] <= 1 and all(r["score"] == pytest.approx(prediction["score"]) for r in regions)
    cat = np.zeros((HEIGHT, WIDTH), bool)
    for region in regions:
        assert (region["from_name"], region["value"]["polygonlabels"]) == ("outline", ["Cat"])
        assert (region["original_width"], region["original_height"]) == (WIDTH, HEIGHT)
        vertices = np.array(region["value"]["points"]) * (WIDTH / 100, HEIGHT / 100)
        cat |= polygon_mask(vertices, WIDTH, HEIGHT)
    # The extreme-point model's cat spans the clicked points (mask quality is not this test's subject).
    rows, cols = np.nonzero(cat)
    (top, bottom, left, right), margin = CAT_EXTREME_POINTS, 15
    assert left[0] - margin <= cols.min() <= left[0] + margin and right[0] - margin <= cols.max() <= right[0] + margin
    assert top[1] - margin <= rows.min() <= top[1] + margin and bottom[1] - margin <= rows.max() <= bottom[1] + margin
    x0, y0, x1, y1 = CAT_BOX
    assert cat[int(y0):int(y1), int(x0):int(x1)].mean() > 0.4
