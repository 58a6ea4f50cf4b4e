"""Real photos with true object masks, assembled from photos that ship inside installed wheels
(scikit-image's ``skimage/data``, matplotlib's ``mpl-data/sample_data``): nothing is downloaded.

The masks are stored as polygons in ``real_photos.json`` beside this module; each object says how
its outline was made (hand-drawn on zoomed crops, or derived exactly from the pixels by a
threshold or a watershed and checked by eye) — never by GrabCut or our models, which are what the
set measures. Photos are split as a whole: ``heldout`` photos are never used for training (the
evaluation set), ``train`` photos may be used for training cut-outs. (The synthetic generator uses
some of the same photos as background textures, see ``backend.training.synthetic.PHOTOS``.)

Polygon frame: natural-image pixels as in ``backend.prompts``; a pixel belongs to a ring when its
centre (col + 0.5, row + 0.5) lies inside. An object's mask is its ``polygons`` minus its
``holes`` minus the masks of the objects named in ``in_front`` (occluders drawn on their own).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.draw import polygon2mask

from backend.coco import EvalImage, EvalObject
from backend.pixels import read_image
from backend.prompts import LoadedImage

SET_FILE = Path(__file__).with_name("real_photos.json")
SPLITS = ("heldout", "train")


@dataclass(frozen=True)
class RealObject:
    photo: str
    name: str  # e.g. "cup"; unique within its photo
    kind: str  # "solid", "thin" or "text": the evaluation groups by it
    how: str  # how the outline was made
    mask: np.ndarray  # (H, W) bool

    @property
    def label(self) -> str:
        return f"{self.photo}/{self.name}"


@dataclass(frozen=True)
class RealPhoto:
    name: str
    split: str
    image: LoadedImage
    objects: list[RealObject]


def real_photos(split: str, set_file: Path = SET_FILE) -> list[RealPhoto]:
    """The photos of ``split`` ("heldout", "train" or "all") with their objects' masks, in file order."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")
    spec = _read_set(set_file)
    return [_photo(name, entry) for name, entry in spec["photos"].items() if split in ("all", entry["split"])]


def evaluation_images(split: str, set_file: Path = SET_FILE) -> "RealPhotoSet":
    """The photos of ``split`` as the evaluation harness iterates them (``EvalImage`` per photo,
    the object kind as category, ``photo/name`` as the object's name)."""
    return RealPhotoSet(real_photos(split, set_file))


def training_samples(set_file: Path = SET_FILE) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) per object of the ``train`` photos: the only real objects training may use."""
    return [(photo.image.array, obj.mask) for photo in real_photos("train", set_file) for obj in photo.objects]


class RealPhotoSet:
    """A split as the harness and ``python -m backend evaluate`` read a dataset: iterable of
    ``EvalImage``, ``len`` = objects, ``n_images``; annotation ids number the objects from 1."""

    def __init__(self, photos: list[RealPhoto]):
        self.photos = photos
        self.n_images = len(photos)
        self.n_objects = sum(len(photo.objects) for photo in photos)

    def __len__(self) -> int:
        return self.n_objects

    def __iter__(self) -> Iterator[EvalImage]:
        next_id = 1
        for image_id, photo in enumerate(self.photos, start=1):
            objects = []
            for obj in photo.objects:
                objects.append(EvalObject(annotation_id=next_id, category=obj.kind, mask=obj.mask, name=obj.label))
                next_id += 1
            yield EvalImage(image_id=image_id, image=photo.image, objects=objects)


def rasterize(rings: list[list[list[float]]], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels whose centre lies inside any of ``rings`` ([[x, y], ...] each)."""
    mask = np.zeros(shape, bool)
    for ring in rings:
        vertices = np.asarray(ring, np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
            raise ValueError(f"a ring needs at least 3 [x, y] vertices, got {ring!r:.80}")
        # polygon2mask takes (row, col) of pixel centres at integer coordinates: shift by half a pixel.
        mask |= polygon2mask(shape, vertices[:, ::-1] - 0.5)
    return mask


@functools.lru_cache(maxsize=4)
def _read_set(set_file: Path) -> dict:
    return json.loads(Path(set_file).read_text())


@functools.lru_cache(maxsize=32)
def _image(package: str, path: str) -> LoadedImage:
    image = read_image(importlib.resources.files(package) / path)
    image.array.setflags(write=False)  # shared by every caller
    return image


def _photo(name: str, entry: dict) -> RealPhoto:
    if entry["split"] not in SPLITS:
        raise ValueError(f"photo {name}: split must be one of {', '.join(SPLITS)}, got {entry['split']!r}")
    image = _image(entry["package"], entry["path"])
    shape = (image.height, image.width)
    outlines = {
        obj["name"]: rasterize(obj["polygons"], shape) & ~rasterize(obj.get("holes", []), shape)
        for obj in entry["objects"]
    }
    objects = []
    for obj in entry["objects"]:
        mask = outlines[obj["name"]].copy()
        for occluder in obj.get("in_front", []):
            mask &= ~outlines[occluder]
        if not mask.any():
            raise ValueError(f"object {name}/{obj['name']} has an empty mask")
        objects.append(RealObject(photo=name, name=obj["name"], kind=obj["kind"], how=obj["how"], mask=mask))
    return RealPhoto(name=name, split=entry["split"], image=image, objects=objects)
