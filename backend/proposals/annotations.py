"""Annotated images -> detector targets: each object's label and box (and mask, for copy-paste).

An example is ``(image HxWx3 uint8, [(label, geometry), ...])``; a geometry is a mask (HxW bool,
the image's size), a box ``(x0, y0, x1, y1)`` in natural pixels, or points ``(N, 2)`` (x, y; e.g.
an object's extreme points), whose extent is the box. An image with no objects is a true negative.
Every image is resized once so that its longer side is the detector's ``long_side``; objects whose
label is not the model's, empty masks, degenerate or tiny boxes (a side under ``MIN_SIDE_PX`` at
that size) and objects beyond ``MAX_OBJECTS`` per image (the largest are kept) are left out and
counted, never an error: an annotation is the annotator's data, not a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np

MAX_OBJECTS = 100  # per image, in training and in proposals (the largest / the most confident are kept)
MIN_SIDE_PX = 2.0  # at the detector's size: smaller objects cannot be located by a stride-8 detector


class ProposalError(ValueError):
    """Input a proposal model cannot be trained or evaluated on (no labels, no images, bad arrays)."""


@dataclass
class Target:
    """One object at the detector's size: label index into the model's labels, box (x0, y0, x1, y1)
    float, and its mask when the annotation had one (copy-paste needs it); from ``prepare`` also
    its box and mask at its image's own size (the labeller looks at objects as serving shows them)."""

    label: int
    box: np.ndarray
    mask: np.ndarray | None = None
    natural_box: np.ndarray | None = None
    natural_mask: np.ndarray | None = None


@dataclass
class Annotated:
    """One image at the detector's size with its objects; ``scale`` = detector px per natural px;
    ``natural_image``: the image at its own size."""

    image: np.ndarray
    targets: list[Target]
    scale: float
    natural_image: np.ndarray | None = None


@dataclass
class Counts:
    images: int = 0
    negatives: int = 0  # images with no object: true negatives
    objects: int = 0
    per_label: dict[str, int] = field(default_factory=dict)
    unknown_label: int = 0
    empty_or_degenerate: int = 0
    too_small: int = 0
    over_cap: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def geometry_box(geometry, shape: tuple[int, int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(box (4,) float64 in natural px, mask or None) of a mask, box or points; (None, None) when the
    geometry has no area (an empty mask, a box or points of zero extent). Raises ProposalError when
    it is none of the three or a mask of another size than the image."""
    array = np.asarray(geometry)
    if array.dtype == bool:
        if array.shape != shape:
            raise ProposalError(f"a mask must have the image's size {shape}, got {array.shape}")
        ys, xs = np.nonzero(array)
        if len(xs) == 0:
            return None, None
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64), array
    array = array.astype(np.float64)
    if array.shape == (4,):
        box = np.array([min(array[0], array[2]), min(array[1], array[3]), max(array[0], array[2]), max(array[1], array[3])])
    elif array.ndim == 2 and array.shape[1] == 2 and len(array) >= 2:
        box = np.concatenate([array.min(axis=0), array.max(axis=0)])
    else:
        raise ProposalError(f"an object's geometry must be a bool mask, a box (4,) or points (N, 2), got {array.shape}")
    if not np.isfinite(box).all():
        raise ProposalError("an object's box or points must be finite")
    box = np.clip(box, 0, [shape[1], shape[0]] * 2)
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        return None, None
    return box, None


def check_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
        raise ProposalError(f"an image must be (H, W, 3) uint8 RGB, got {array.shape} {array.dtype}")
    return array


def resize_long_side(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    scale = long_side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation), scale


def prepare(examples: Iterable[tuple], labels: Sequence[str], long_side: int) -> tuple[list[Annotated], Counts]:
    """Examples -> images at the detector's size with their targets, and what was kept and left out."""
    index = {label: i for i, label in enumerate(labels)}
    counts = Counts(per_label={label: 0 for label in labels})
    prepared = []
    for example in examples:
        try:
            image, objects = example
        except (TypeError, ValueError):
            raise ProposalError("an example must be (image, [(label, geometry), ...])") from None
        image = check_image(image)
        resized, scale = resize_long_side(image, long_side)
        targets = []
        for label, geometry in objects:
            if label not in index:
                counts.unknown_label += 1
                continue
            natural_box, natural_mask = geometry_box(geometry, image.shape[:2])
            if natural_box is None:
                counts.empty_or_degenerate += 1
                continue
            box = natural_box * scale
            if min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE_PX:
                counts.too_small += 1
                continue
            mask = None
            if natural_mask is not None:
                mask = cv2.resize(natural_mask.astype(np.uint8), resized.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
                if not mask.any():
                    counts.too_small += 1
                    continue
            targets.append(Target(index[label], box, mask, natural_box, natural_mask))
        if len(targets) > MAX_OBJECTS:
            counts.over_cap += len(targets) - MAX_OBJECTS
            targets = sorted(targets, key=lambda t: -(t.box[2] - t.box[0]) * (t.box[3] - t.box[1]))[:MAX_OBJECTS]
        counts.images += 1
        counts.negatives += not targets
        counts.objects += len(targets)
        for target in targets:
            counts.per_label[labels[target.label]] += 1
        prepared.append(Annotated(resized, targets, scale, image))
    return prepared, counts
