"""Fakes for server tests: segmenters whose right mask is known geometrically, an image loader
without network, Label Studio region/task builders, and an app factory wiring them up."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend.app import create_app
from backend.images import ImageNotFound
from backend.prompts import LoadedImage, Prompt, Segmentation
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings

W, H = 200, 100
IMAGE_URL = "http://images.test/cat.jpg"
PROJECT = "7.1700000000"
CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="Car"/><Label value="Dog"/></BrushLabels>
  <KeyPointLabels name="extreme" toName="image" smart="true"><Label value="Car"/><Label value="Dog"/></KeyPointLabels>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="Car"/><Label value="Dog"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Car"/><Label value="Dog"/></RectangleLabels>
</View>
"""


class BoxSegmenter:
    """Answers every prompt with a filled rectangle: the prompt's box, else the box around its
    positive points (grown by ``margin`` px). Records the prompts it got."""

    def __init__(self, model_name: str, score: float = 0.8, margin: int = 0):
        self.model_name = model_name
        self.score = score
        self.margin = margin
        self.prompts: list[Prompt] = []

    def segment(self, image: LoadedImage, prompt: Prompt) -> Segmentation:
        self.prompts.append(prompt)
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
        else:
            positive = prompt.points[prompt.point_labels == 1]
            (x0, y0), (x1, y1) = positive.min(axis=0) - self.margin, positive.max(axis=0) + self.margin
        mask = np.zeros((image.height, image.width), bool)
        mask[max(int(y0), 0):math.ceil(y1), max(int(x0), 0):math.ceil(x1)] = True
        return Segmentation(mask=mask, score=self.score, label=prompt.label, model=self.model_name)


def box_mask(x0, y0, x1, y1, width=W, height=H) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


class FakeImages:
    """``ImageLoader`` stand-in: known URLs give a black image of their size; others raise ImageNotFound."""

    def __init__(self, sizes: dict[str, tuple[int, int]] | None = None):
        self.sizes = sizes or {IMAGE_URL: (W, H)}
        self.loaded: list[str] = []

    def load(self, url: str, task_id: int | None = None, background: bool = False) -> LoadedImage:
        if url not in self.sizes:
            raise ImageNotFound(f"no image at {url}")
        self.loaded.append(url)
        width, height = self.sizes[url]
        return LoadedImage(np.zeros((height, width, 3), np.uint8), key=url)


def make_app(tmp_path: Path, sam: bool = True, extreme: bool = True, images: FakeImages | None = None,
             segmenters: SegmenterSet | None = None, **settings):
    """(app, segmenters, images): the app as production wires it (``backend.wsgi``), on ``tmp_path``
    as MODEL_DIR, with fake models (``BoxSegmenter``s unless ``segmenters`` is given) and images."""
    segmenters = segmenters or SegmenterSet(
        sam=BoxSegmenter("sam-fake", score=0.9) if sam else None,
        extreme=BoxSegmenter("extreme-fake", score=0.7) if extreme else None,
        sam_name="sam-fake" if sam else "",
        extreme_version="v1" if extreme else "",
    )
    images = images or FakeImages()
    # Production reads the extreme-point model's version and its weights from one folder: the fake's is "v1".
    weights = tmp_path / "extreme_weights"
    weights.mkdir(exist_ok=True)
    (weights / "manifest.json").write_text('{"version": "v1"}')
    config = replace(Settings(), **{"model_dir": tmp_path, "extreme_weights": weights, **settings})
    app = create_app(config, segmenters=segmenters, images=images)
    return app, segmenters, images


def keypoint(x_px, y_px, label="Car", tool="click", positive=True, rotation=0, size=(W, H)) -> dict:
    """A smart keypoint region as Label Studio sends it, at pixel (x_px, y_px) of an image of ``size``."""
    width, height = size
    return {"id": f"kp{x_px}_{y_px}", "from_name": tool, "to_name": "image", "type": "keypointlabels",
            "original_width": width, "original_height": height, "image_rotation": rotation, "is_positive": positive,
            "value": {"x": x_px / width * 100, "y": y_px / height * 100, "width": 0.5, "keypointlabels": [label]}}


def rectangle(x0, y0, x1, y1, label="Car", size=(W, H)) -> dict:
    """A rectangle region from pixel (x0, y0) to (x1, y1) of an image of ``size``."""
    width, height = size
    return {"id": f"rect{x0}_{y0}", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": x0 / width * 100, "y": y0 / height * 100, "width": (x1 - x0) / width * 100,
                      "height": (y1 - y0) / height * 100, "rotation": 0, "rectanglelabels": [label]}}


def extreme_points(x0, y0, x1, y1, label="Car", size=(W, H)) -> list[dict]:
    """Top, bottom, left and right extreme points of the box (x0, y0, x1, y1)."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return [keypoint(x, y, label, "extreme", size=size) for x, y in ((cx, y0), (cx, y1), (x0, cy), (x1, cy))]


def task(task_id=1, url=IMAGE_URL, predictions=(), annotations=(), drafts=None) -> dict:
    body = {"id": task_id, "data": {"image": url}, "meta": {}, "predictions": list(predictions),
            "annotations": list(annotations), "project": 7}
    if drafts is not None:
        body["drafts"] = drafts
    return body


def predict_body(tasks: list[dict], context: list[dict] | None = None, label_config: str | None = CONFIG) -> dict:
    """A /predict request as Label Studio 1.23 sends it (interactive when ``context`` is given)."""
    body = {"tasks": tasks, "project": PROJECT,
            "params": {"login": None, "password": "s3cret-data-password",
                       "context": {"result": context} if context is not None else None}}
    if label_config is not None:
        body["label_config"] = label_config
    return body


def setup_body(extra_params=None, schema=CONFIG) -> dict:
    return {"project": PROJECT, "schema": schema, "hostname": "http://localhost:8080",
            "access_token": "legacy-token-abc123", "extra_params": extra_params}
