"""Training/validation samples from COCO-format files, Label Studio exports and the synthetic generator.

Every source is a ``Sequence`` of ``Sample``s: (image (H, W, 3) uint8 RGB, mask (H, W) bool) of one
object instance in natural-image pixels. Images are read lazily, one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from backend.pixels import read_image
from backend.protocol import RegionError, mask_from_region
from backend.training.synthetic import generate_scene

Sample = tuple[np.ndarray, np.ndarray]
MIN_MASK_PIXELS = 16


class _OneImageCache:
    """Consecutive samples usually share an image: keep the last one decoded."""

    def __init__(self, load: Callable[[object], np.ndarray]):
        self._load, self._key, self._image = load, None, None

    def __call__(self, key: object) -> np.ndarray:
        if key != self._key:
            self._image, self._key = self._load(key), key
        return self._image


class CocoSamples(Sequence):
    """Instances of a COCO instance-segmentation file (polygons or RLE; crowd annotations skipped),
    read by ``backend.coco.CocoObjects`` as evaluation reads them."""

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, min_pixels: int = MIN_MASK_PIXELS):
        from backend.coco import CocoObjects

        self._objects = CocoObjects(Path(annotation_file), Path(image_dir), min_area=min_pixels)
        self._ids = self._objects.object_ids
        self._images = _OneImageCache(lambda image_id: self._objects.image(image_id).array)

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Sample:
        ann_id = self._ids[index]
        return self._images(self._objects.image_of(ann_id)), self._objects.mask(ann_id)


class LabelStudioSamples(Sequence):
    """Instances in a Label Studio JSON export: ``brushlabels`` (RLE) and ``polygonlabels`` (percent)
    results, one sample per result. `load_image` turns a task's image URL into pixels; the default
    reads local paths and ``/data/...`` URLs by file name under `image_dir`."""

    def __init__(
        self,
        export: str | Path | list,
        image_dir: str | Path | None = None,
        load_image: Callable[[str], np.ndarray] | None = None,
    ):
        tasks = json.loads(Path(export).read_text()) if isinstance(export, (str, Path)) else export
        if not isinstance(tasks, list):
            raise ValueError("a Label Studio JSON export is a list of tasks")
        self._items = [
            (_task_image_url(task), result)
            for task in tasks
            for annotation in task.get("annotations", [])
            if not annotation.get("was_cancelled")
            for result in annotation.get("result", [])
            if result.get("type") in ("brushlabels", "polygonlabels")
        ]
        if load_image is None:
            if image_dir is None:
                raise ValueError("LabelStudioSamples needs image_dir or load_image")
            load_image = lambda url: read_image(Path(image_dir) / Path(unquote(urlparse(url).path)).name).array  # noqa: E731
        self._images = _OneImageCache(load_image)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        url, result = self._items[index]
        image = self._images(url)
        return image, result_mask(result, image.shape[:2])


def _task_image_url(task: dict) -> str:
    data = task.get("data", {})
    for value in data.values():
        if isinstance(value, str):
            return value
    raise ValueError(f"task {task.get('id')} has no image URL in its data")


def result_mask(result: dict, image_shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of one LS ``brushlabels``/``polygonlabels`` result on an image of `image_shape`,
    read as serving reads it (``protocol.mask_from_region``). A brush drawn on the image at another
    size (its ``original_width``/``original_height``) is decoded at that size and resized.
    Raises RegionError for a result that holds no readable mask."""
    height, width = image_shape
    if result.get("type") == "polygonlabels":
        return mask_from_region(result, width, height)
    drawn_width, drawn_height = result.get("original_width", width), result.get("original_height", height)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (drawn_width, drawn_height)):
        raise RegionError("brush region's original_width and original_height must be positive integers")
    mask = mask_from_region(result, drawn_width, drawn_height)
    if mask.shape != (height, width):
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return mask


class SyntheticSamples(Sequence):
    """`count` samples: sample i is a random visible instance of synthetic scene i of (seed, split)."""

    def __init__(self, count: int, seed: int, split: str = "train"):
        self._count, self._seed, self._split = count, seed, split

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self._count:
            raise IndexError(index)
        scene = generate_scene(self._seed, index, self._split)
        while not scene.masks:  # very rare: every object ended up (almost) hidden
            index += self._count
            scene = generate_scene(self._seed, index, self._split)
        choice = np.random.default_rng([self._seed, index]).integers(len(scene.masks))
        return scene.image, scene.masks[choice]
