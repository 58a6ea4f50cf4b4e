"""A project's annotated masks, read from Label Studio: tasks -> one image + instance masks each.

Reads through ``backend.label_studio_client`` with ``LABEL_STUDIO_URL`` and the Personal Access
Token ``LABEL_STUDIO_API_KEY``, using the project's JSON export,
which lists annotated tasks with their current annotations: deleted annotations are simply absent.
Per task the most recently updated annotation that is not cancelled and holds masks is used (it
reflects the project's current labeling policy); each brush region (RLE) and polygon region
(percent points) on the labeled image is one instance.

To bound memory, each instance becomes a crop around its mask with a generous margin (the model
crops tighter around its prompt anyway), downscaled if still large.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from backend.active_learning.events import MASK_REGION_TYPES
from backend.images import ImageError, ImageLoader
from backend.label_studio_client import SETTINGS_HINT, LabelStudioClient, LabelStudioError
from backend.labeling import LabelingConfig, LabelingError
from backend.protocol import RegionError
from backend.training.datasets import MIN_MASK_PIXELS, Sample, result_mask

logger = logging.getLogger(__name__)

CROP_MARGIN = 0.5  # of the mask's box size on each side (the model's own margin is at most 0.25)
CROP_MIN_MARGIN_PX = 16
CROP_MAX_SIDE = 1024


# The project's data cannot be read: every Label Studio failure (its subclasses say whether it is
# transient, the token, or about what was asked); the message is safe to show (no secrets).
ProjectDataError = LabelStudioError


@dataclass
class AnnotatedTask:
    """One task's training material: ``samples`` are (image crop (h, w, 3) uint8 RGB, mask (h, w)
    bool) per instance, ``labels`` their labels in the same order."""

    task_id: int
    annotation_id: int
    samples: list[Sample] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


@dataclass
class ProjectData:
    tasks: list[AnnotatedTask]
    skipped: list[str]  # one line per task left out and why, safe to show


def latest_usable_annotation(task: dict, mask_names: frozenset[str], image_name: str) -> dict | None:
    """The most recently updated annotation of ``task`` that is not cancelled and has mask regions."""
    usable = [
        a for a in task.get("annotations") or []
        if not a.get("was_cancelled") and mask_regions(a.get("result") or [], mask_names, image_name)
    ]
    return max(usable, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0), default=None)


def mask_regions(result: list, mask_names: frozenset[str], image_name: str) -> list[dict]:
    """The brush/polygon regions of an annotation result that label ``image_name``."""
    return [
        region for region in result
        if isinstance(region, dict)
        and region.get("type") in MASK_REGION_TYPES
        and region.get("to_name") == image_name
        and (region.get("type") == "polygonlabels" or region.get("from_name") in mask_names)
    ]


def region_label(region: dict) -> str:
    labels = (region.get("value") or {}).get(region["type"]) or [""]
    return str(labels[0])


def crop_sample(image: np.ndarray, mask: np.ndarray, margin: float = CROP_MARGIN) -> Sample:
    """The part of ``image`` (H, W, 3) and ``mask`` (H, W) around the mask's box plus ``margin`` (a
    fraction of the box size, at least CROP_MIN_MARGIN_PX) per side, clipped to the image; scaled
    down so that its longer side is at most CROP_MAX_SIDE."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    pad_y = max(CROP_MIN_MARGIN_PX, int(margin * (rows[-1] + 1 - rows[0])))
    pad_x = max(CROP_MIN_MARGIN_PX, int(margin * (cols[-1] + 1 - cols[0])))
    y0, y1 = max(0, rows[0] - pad_y), min(mask.shape[0], rows[-1] + 1 + pad_y)
    x0, x1 = max(0, cols[0] - pad_x), min(mask.shape[1], cols[-1] + 1 + pad_x)
    image, mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    scale = CROP_MAX_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def annotated_task(task: dict, annotation: dict, config: LabelingConfig, image: np.ndarray) -> AnnotatedTask:
    """The instances of ``annotation`` on ``image`` (H, W, 3): masks under MIN_MASK_PIXELS are dropped."""
    item = AnnotatedTask(task_id=int(task["id"]), annotation_id=int(annotation["id"]))
    for region in mask_regions(annotation["result"], frozenset(config.mask_tools), config.image_name):
        mask = result_mask(region, image.shape[:2])
        if mask.sum() >= MIN_MASK_PIXELS:
            item.samples.append(crop_sample(image, mask))
            item.labels.append(region_label(region))
    return item


class LabelStudioProjectReader:
    """Reads projects from the Label Studio at ``settings.label_studio_url``."""

    def __init__(self, settings, client: LabelStudioClient | None = None, image_loader: ImageLoader | None = None):
        self._client = client or LabelStudioClient.from_settings(settings)
        if not self._client.configured:
            raise ProjectDataError(f"training reads annotations from Label Studio: {SETTINGS_HINT}")
        self._images = image_loader or ImageLoader(settings)
        self._extreme_tool_prefix = settings.extreme_tool_prefix

    def read(self, project: str, progress: Callable[[int, int], None] = lambda done, total: None) -> ProjectData:
        """Every annotated task of ``project`` with usable masks. ``progress(done, total)`` after each task."""
        config = self._labeling_config(project)
        tasks = self._client.export(project)
        chosen = [(task, latest_usable_annotation(task, frozenset(config.mask_tools), config.image_name))
                  for task in tasks if isinstance(task, dict)]
        chosen = [(task, annotation) for task, annotation in chosen if annotation is not None]
        data = ProjectData(tasks=[], skipped=[])
        for done, (task, annotation) in enumerate(chosen, start=1):
            url = (task.get("data") or {}).get(config.image_key)
            try:
                if not isinstance(url, str):
                    raise ImageError(f"no image URL under data.{config.image_key}")
                image = self._images.load(url, task_id=task["id"]).array
                item = annotated_task(task, annotation, config, image)
            except (ImageError, RegionError) as exc:
                data.skipped.append(f"task {task.get('id')}: {exc}")
                logger.warning("training data: skipping task %s: %s", task.get("id"), exc)
            else:
                if item.samples:
                    data.tasks.append(item)
            progress(done, len(chosen))
        return data

    def _labeling_config(self, project: str) -> LabelingConfig:
        try:
            return LabelingConfig.parse(self._client.label_config(project), self._extreme_tool_prefix)
        except LabelingError as exc:
            raise ProjectDataError(f"project {project}'s labeling config: {exc}") from None
