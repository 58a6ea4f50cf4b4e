"""A project's annotated tasks as proposal-model examples: one whole image and its objects per task.

Per task the most recently updated annotation that is not cancelled is the annotator's last word
(deleted annotations are absent from the export). Its objects, each a label and a geometry
(``backend.proposals``' example format):

- a brush or polygon region: its mask (which gives the box and the extreme points);
- a rectangle: its box; four extreme-tool points of one label: their extent;
- click keypoints say nothing of an object's extent and are not objects.

A mask's own prompt (the rectangle or extreme points an annotator drew to get it, which Label Studio
keeps beside it) is the same object: a box or point group overlapping a mask of its label by
``SAME_OBJECT_IOU`` is left out. An annotation with no object region is a true negative: the image
shows none of the project's objects. Objects of labels no prompt tool and mask control of the config
carry are kept here and counted (and left out) by the trainer.

A task whose image or regions cannot be read is skipped whole and said so (a task missing one of
its objects would teach the model that the object is background). Images are kept at most
``MAX_SIDE`` px on their longer side, their objects scaled with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from backend.active_learning.ls_data import LabelStudioProjectReader, mask_regions, region_label
from backend.images import ImageError
from backend.labeling import LabelingConfig, ToolKind
from backend.protocol import RegionError, box_px, point_px
from backend.routing import EXTREME_POINTS
from backend.training.datasets import result_mask

logger = logging.getLogger(__name__)

MAX_SIDE = 1024  # the detector works at 512 px; larger images only cost memory
SAME_OBJECT_IOU = 0.5


@dataclass
class ProposalTask:
    """One annotated task: its image (H, W, 3) uint8 RGB and its objects [(label, geometry)]."""

    task_id: int
    image: np.ndarray
    objects: list[tuple[str, object]] = field(default_factory=list)

    @property
    def example(self) -> tuple[np.ndarray, list]:
        return self.image, self.objects


@dataclass
class ProposalData:
    tasks: list[ProposalTask]
    labels: list[str]  # the labels the project's config gives masks, in config order
    skipped: list[str]  # one line per task left out and why, safe to show


def latest_annotation(task: dict) -> dict | None:
    """The most recently updated annotation of ``task`` that is not cancelled."""
    usable = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")
              and isinstance(a.get("result", []), list)]
    return max(usable, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0), default=None)


def annotation_objects(result: list, config: LabelingConfig, width: int, height: int) -> list[tuple[str, object]]:
    """The objects of one annotation result on a ``width`` x ``height`` image (see the module
    docstring). Raises RegionError for a region that cannot be read."""
    masks = [(region_label(region), result_mask(region, (height, width)))
             for region in mask_regions(result, frozenset(config.mask_tools), config.image_name)]
    masks = [(label, mask) for label, mask in masks if mask.any()]
    extents: list[tuple[str, object]] = []
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for index, region in enumerate(result):
        tool = config.tools.get(region.get("from_name")) if isinstance(region, dict) else None
        value = region.get("value") if tool is not None else None
        if not isinstance(value, dict) or region.get("to_name") != config.image_name:
            continue
        labels = value.get(region.get("type")) or value.get("labels")
        if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
            continue
        what = f"{region.get('type')} #{index + 1}"
        if tool.kind is ToolKind.RECTANGLE:
            extents.append((labels[0], np.array(box_px(value, width, height, what), np.float64)))
        elif tool.kind is ToolKind.EXTREME and region.get("is_positive", True) is not False:
            groups.setdefault((tool.name, labels[0]), []).append(point_px(value, width, height, what))
    for (_, label), points in groups.items():
        for start in range(0, len(points) - EXTREME_POINTS + 1, EXTREME_POINTS):
            extents.append((label, np.array(points[start:start + EXTREME_POINTS], np.float64)))
    mask_boxes = [(label, _mask_box(mask)) for label, mask in masks]
    kept = [(label, geometry) for label, geometry in extents
            if not any(label == other and _iou(_extent_box(geometry), box) >= SAME_OBJECT_IOU
                       for other, box in mask_boxes)]
    return list(masks) + kept


def scaled(image: np.ndarray, objects: list, max_side: int = MAX_SIDE) -> tuple[np.ndarray, list]:
    """``image`` and its objects scaled down so the longer side is at most ``max_side``."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image, objects
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    out = []
    for label, geometry in objects:
        geometry = np.asarray(geometry)
        if geometry.dtype == bool:
            geometry = cv2.resize(geometry.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        else:
            geometry = geometry * scale
        out.append((label, geometry))
    return small, out


class ProposalDataReader(LabelStudioProjectReader):
    """Reads projects' annotated tasks from the Label Studio at ``settings.label_studio_url`` (the same
    connection and config reading as the extreme-point model's reader; other tasks and objects)."""

    def read(self, project: str, progress: Callable[[int, int], None] = lambda done, total: None) -> ProposalData:
        """Every annotated task of ``project`` (see the module docstring); ``progress(done, total)``."""
        config = self._labeling_config(project)
        chosen = [(task, latest_annotation(task)) for task in self._client.export(project) if isinstance(task, dict)]
        chosen = [(task, annotation) for task, annotation in chosen if annotation is not None]
        data = ProposalData(tasks=[], labels=list(config.mask_tools_for_label), skipped=[])
        for done, (task, annotation) in enumerate(chosen, start=1):
            url = (task.get("data") or {}).get(config.image_key)
            try:
                if not isinstance(url, str):
                    raise ImageError(f"no image URL under data.{config.image_key}")
                image = self._images.load(url, task_id=task.get("id")).array
                objects = annotation_objects(annotation.get("result") or [], config, image.shape[1], image.shape[0])
            except (ImageError, RegionError) as exc:
                data.skipped.append(f"task {task.get('id')}: {exc}")
                logger.warning("proposal training data: skipping task %s: %s", task.get("id"), exc)
            else:
                data.tasks.append(ProposalTask(int(task["id"]), *scaled(image, objects)))
            progress(done, len(chosen))
        return data


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def _extent_box(geometry) -> np.ndarray:
    array = np.asarray(geometry, np.float64)
    return array if array.shape == (4,) else np.concatenate([array.min(axis=0), array.max(axis=0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height
    return width * height / union if union > 0 else 0.0
