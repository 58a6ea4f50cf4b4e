"""Reading a project's masks from Label Studio: export -> latest usable annotation per task ->
instance masks (brush RLE and polygons) -> crops; held-out split by task id."""

from __future__ import annotations

import json

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle

from backend.active_learning.ls_data import LabelStudioProjectReader, ProjectDataError, crop_sample
from backend.images import ImageNotFound
from backend.label_studio_client import LabelStudioAuthRefused
from backend.prompts import LoadedImage
from backend.settings import Settings

CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="mask" toName="image"><Label value="Cat"/></BrushLabels>
<PolygonLabels name="poly" toName="image"><Label value="Cat"/></PolygonLabels>
<KeyPointLabels name="extreme" toName="image" smart="true"><Label value="Cat"/></KeyPointLabels></View>"""
W, H = 64, 48


def brush(mask: np.ndarray, label="Cat") -> dict:
    return {"type": "brushlabels", "from_name": "mask", "to_name": "image", "original_width": W, "original_height": H,
            "value": {"format": "rle", "rle": mask2rle(np.where(mask, 255, 0).astype(np.uint8)), "brushlabels": [label]}}


def polygon(points_percent) -> dict:
    return {"type": "polygonlabels", "from_name": "poly", "to_name": "image", "original_width": W, "original_height": H,
            "value": {"points": points_percent, "polygonlabels": ["Cat"]}}


def rect_mask(x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


KEYPOINT = {"type": "keypointlabels", "from_name": "extreme", "to_name": "image", "value": {"x": 1, "y": 1}}
EXPORT = [
    {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [
        {"id": 11, "updated_at": "2024-01-01T10:00:00Z", "was_cancelled": False, "result": [brush(rect_mask(0, 0, 10, 10))]},
        {"id": 12, "updated_at": "2024-01-02T10:00:00Z", "was_cancelled": False,  # the newer policy wins
         "result": [brush(rect_mask(10, 10, 30, 30)), polygon([[50, 50], [75, 50], [75, 75], [50, 75]]), KEYPOINT]},
        {"id": 13, "updated_at": "2024-01-03T10:00:00Z", "was_cancelled": True, "result": [brush(rect_mask(0, 0, 5, 5))]},
    ]},
    {"id": 2, "data": {"image": "/data/upload/1/b.png"}, "annotations": [
        {"id": 21, "was_cancelled": False, "result": [KEYPOINT]}]},  # prompts only: no training data
    {"id": 3, "data": {"image": "/data/upload/1/missing.png"}, "annotations": [
        {"id": 31, "was_cancelled": False, "result": [brush(rect_mask(0, 0, 20, 20))]}]},
]


class FakeClient:
    """The two Label Studio calls the reader makes."""

    configured = True

    def __init__(self, export):
        self._export = export

    def label_config(self, project):
        assert project == "9"
        return CONFIG

    def export(self, project):
        assert project == "9"
        return json.loads(json.dumps(self._export))


class FakeImages:
    def load(self, url, task_id=None):
        if "missing" in url:
            raise ImageNotFound(f"HTTP 404 for {url}")
        return LoadedImage(np.full((H, W, 3), task_id, np.uint8), key=url)


def test_reader_decodes_the_latest_usable_annotation_of_each_task():
    progress = []
    data = LabelStudioProjectReader(Settings(), client=FakeClient(EXPORT), image_loader=FakeImages()).read(
        "9", progress=lambda done, total: progress.append((done, total)))
    assert [(t.task_id, t.annotation_id, t.labels) for t in data.tasks] == [(1, 12, ["Cat", "Cat"])]
    (image, brush_mask), (_, polygon_mask) = data.tasks[0].samples
    assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[:2] == brush_mask.shape
    assert brush_mask.sum() == 20 * 20  # the 20 x 20 brush square, cropped with margin around it
    assert 16 * 12 <= polygon_mask.sum() <= 17 * 13  # 50-75 % of 64 x 48 px (edge pixels may count)
    assert data.skipped == ["task 3: HTTP 404 for /data/upload/1/missing.png"]
    assert progress[-1] == (2, 2)  # tasks 1 and 3 had usable annotations


def test_reader_needs_label_studio_credentials():
    with pytest.raises(ProjectDataError, match="LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"):
        LabelStudioProjectReader(Settings())


def test_reader_reports_label_studio_http_errors_without_the_token(requests_mock):
    requests_mock.get("http://ls:8080/api/projects/9/", status_code=401, json={"detail": "bad token"})
    settings = Settings(label_studio_url="http://ls:8080", label_studio_api_key="pat-secret")
    with pytest.raises(ProjectDataError) as error:
        LabelStudioProjectReader(settings, image_loader=FakeImages()).read("9")
    assert "HTTP 401" in str(error.value) and "pat-secret" not in str(error.value)
    assert isinstance(error.value, LabelStudioAuthRefused)


def test_reader_reads_the_config_and_the_json_export_over_http(requests_mock):
    requests_mock.get("http://ls:8080/api/projects/9/", json={"id": 9, "label_config": CONFIG})
    requests_mock.get("http://ls:8080/api/projects/9/export?export_type=JSON", json=EXPORT)
    settings = Settings(label_studio_url="http://ls:8080", label_studio_api_key="pat-secret")
    data = LabelStudioProjectReader(settings, image_loader=FakeImages()).read("9")
    assert [t.task_id for t in data.tasks] == [1]
    assert [r.headers["Authorization"] for r in requests_mock.request_history] == ["Token pat-secret"] * 2


def test_crop_keeps_the_mask_with_a_margin_and_bounds_the_size():
    image = np.zeros((3000, 4000, 3), np.uint8)
    mask = np.zeros((3000, 4000), bool)
    mask[1000:2000, 1000:3000] = True
    crop, crop_mask = crop_sample(image, mask)
    assert max(crop.shape[:2]) == 1024 and crop.shape[:2] == crop_mask.shape
    rows, cols = np.flatnonzero(crop_mask.any(1)), np.flatnonzero(crop_mask.any(0))
    assert rows[0] > 0 and cols[0] > 0 and rows[-1] < crop_mask.shape[0] - 1  # margin on every side
    small = np.zeros((40, 40), bool)
    small[0:5, 0:5] = True
    assert crop_sample(np.zeros((40, 40, 3), np.uint8), small)[1].shape == (21, 21)  # clipped at the border


def test_an_unreadable_mask_skips_its_task_and_a_bug_fails_the_read(monkeypatch):
    """Bad data (a brush that cannot be decoded) skips the task with the reason; a programming error
    raised while reading a task (a bare ValueError, a TypeError) is not mistaken for bad data."""
    import backend.active_learning.ls_data as ls_data
    from backend.protocol import RegionError

    def read_with(error):
        def broken(*args, **kwargs):
            raise error

        monkeypatch.setattr(ls_data, "annotated_task", broken)
        return LabelStudioProjectReader(Settings(), client=FakeClient(EXPORT), image_loader=FakeImages()).read("9")

    assert "task 1: brush region's RLE cannot be decoded" in read_with(RegionError("brush region's RLE cannot be decoded")).skipped
    for bug in (ValueError("bug"), TypeError("bug")):
        with pytest.raises(type(bug)):
            read_with(bug)
