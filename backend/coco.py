"""The one reader of COCO-format instance datasets: its objects image by image for evaluation
(``python -m backend evaluate``), or one by one as training samples (``training.datasets.CocoSamples``)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from backend.pixels import read_image, rgb_uint8
from backend.prompts import LoadedImage


@dataclass(frozen=True)
class EvalObject:
    """One ground-truth instance: ``mask`` (H, W) bool in the image's natural pixels."""

    annotation_id: int
    category: str
    mask: np.ndarray
    name: str = ""  # a readable name where the dataset has one (the real-photo set: "coffee/cup")


@dataclass(frozen=True)
class EvalImage:
    image_id: int
    image: LoadedImage
    objects: list[EvalObject]


class CocoObjects:
    """Non-crowd instances with a segmentation of at least ``min_area`` pixels; with
    ``max_objects``, a random sample of that many (seeded, so runs are comparable).

    Images and masks are read lazily while iterating, one image at a time.
    """

    def __init__(
        self,
        annotations: Path,
        image_dir: Path,
        min_area: float = 0.0,
        max_objects: int | None = None,
        seed: int = 0,
    ):
        if not annotations.is_file():
            raise FileNotFoundError(f"COCO annotations file not found: {annotations}")
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image directory not found: {image_dir}")
        self.image_dir = image_dir
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                self._coco = COCO(str(annotations))
        except (json.JSONDecodeError, AssertionError) as exc:  # pycocotools asserts the top level is an object
            raise ValueError(f"{annotations} is not a COCO instances JSON file: {exc or 'not a JSON object'}") from None
        eligible = [ann["id"] for ann in self._eligible(min_area)]
        if max_objects is not None and max_objects < len(eligible):
            eligible = np.random.default_rng(seed).choice(eligible, size=max_objects, replace=False).tolist()
        self._by_image: dict[int, list[int]] = {}
        for ann_id in sorted(eligible):
            self._by_image.setdefault(self._coco.anns[ann_id]["image_id"], []).append(ann_id)
        self.n_objects = len(eligible)
        self.n_images = len(self._by_image)

    def _eligible(self, min_area: float) -> Iterator[dict]:
        for ann_id in sorted(self._coco.anns):
            ann = self._coco.anns[ann_id]
            if ann.get("iscrowd", 0):
                continue
            if not ann.get("segmentation"):
                raise ValueError(f"annotation {ann_id} has no segmentation; evaluation needs instance masks")
            if ann["category_id"] not in self._coco.cats:
                raise ValueError(f"annotation {ann_id} refers to unknown category {ann['category_id']}")
            if ann["image_id"] not in self._coco.imgs:
                raise ValueError(f"annotation {ann_id} refers to unknown image {ann['image_id']}")
            if mask_utils.area(self._coco.annToRLE(ann)) >= max(min_area, 1):
                yield ann

    def __len__(self) -> int:
        return self.n_objects

    def __iter__(self) -> Iterator[EvalImage]:
        for image_id in sorted(self._by_image):
            image = self.image(image_id)
            objects = [
                EvalObject(
                    annotation_id=ann_id,
                    category=self._coco.cats[self._coco.anns[ann_id]["category_id"]]["name"],
                    mask=self.mask(ann_id),
                )
                for ann_id in self._by_image[image_id]
            ]
            yield EvalImage(image_id=image_id, image=image, objects=objects)

    @property
    def object_ids(self) -> list[int]:
        """The annotation ids of the objects, image by image (the order of iteration)."""
        return [ann_id for image_id in sorted(self._by_image) for ann_id in self._by_image[image_id]]

    def image_of(self, ann_id: int) -> int:
        return self._coco.anns[ann_id]["image_id"]

    def mask(self, ann_id: int) -> np.ndarray:
        """The object's (H, W) bool mask in its image's natural pixels."""
        return self._coco.annToMask(self._coco.anns[ann_id]).astype(bool)

    def image(self, image_id: int) -> LoadedImage:
        info = self._coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"image {image_id} not found: {path}")
        image = read_image(path)
        if (image.width, image.height) != (info["width"], info["height"]):
            # Natural (EXIF-rotated) pixels as in the backend; COCO's own annotations may follow
            # the stored pixels instead, which the size then tells.
            with Image.open(path) as opened:
                image = LoadedImage(rgb_uint8(opened), key=image.key)
        if (image.width, image.height) != (info["width"], info["height"]):
            raise ValueError(
                f"image {path} is {image.width}x{image.height} but the annotations say "
                f"{info['width']}x{info['height']}"
            )
        return image
