"""Images with objects whose exact masks are known, and the prompts an annotator would draw on them.

- ``synthetic_objects``: a held-out scene of the model engineer's generator
  (``backend.training.synthetic``), which the extreme-point model never saw in training.
- ``overlapping_pair``: two overlapping discs of one texture on a photo background, for the
  merge policy: whatever each object's mask looks like, the two overlap by construction.

All coordinates are natural-image pixels (``backend.prompts`` frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.training.mask_prompts import extreme_points, mask_box
from backend.training.synthetic import generate_scene

SCENE_SEED, SCENE_INDEX = 7, 1208  # the two largest objects apart, their extreme points >= 20 px apart and from the frame


@dataclass(frozen=True)
class SceneObject:
    """mask: (H, W) bool; points: its (4, 2) extreme points (left, right, top, bottom); box: (x0, y0, x1, y1)."""

    mask: np.ndarray

    @property
    def points(self) -> np.ndarray:
        return extreme_points(self.mask)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return mask_box(self.mask)

    @property
    def inside_point(self) -> tuple[float, float]:
        """A pixel centre of the object that is deepest inside it (farthest from its outline)."""
        import cv2

        distance = cv2.distanceTransform(self.mask.astype(np.uint8), cv2.DIST_L2, 5)
        row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
        return col + 0.5, row + 0.5


    @property
    def background_point(self) -> tuple[float, float]:
        """The pixel centre nearest the middle of the object's box that is not part of it (e.g. in a hole)."""
        x0, y0, x1, y1 = (int(v) for v in self.box)
        rows, cols = np.nonzero(~self.mask[y0:y1, x0:x1])
        nearest = int(np.argmin((cols + x0 + 0.5 - (x0 + x1) / 2) ** 2 + (rows + y0 + 0.5 - (y0 + y1) / 2) ** 2))
        return cols[nearest] + x0 + 0.5, rows[nearest] + y0 + 0.5


def synthetic_objects() -> tuple[np.ndarray, list[SceneObject]]:
    """(H, W, 3) uint8 RGB image and its objects, largest first."""
    scene = generate_scene(SCENE_SEED, SCENE_INDEX, "heldout")
    masks = sorted(scene.masks, key=lambda m: -int(m.sum()))
    return scene.image, [SceneObject(m) for m in masks]


def overlapping_pair(width: int = 360, height: int = 280) -> tuple[np.ndarray, list[SceneObject]]:
    """Two discs of the same texture overlapping in a lens, on a different photo."""
    import skimage.data

    background = skimage.data.grass()[:height, :width]
    background = np.repeat(background[..., None], 3, axis=2) if background.ndim == 2 else background
    texture = skimage.data.coffee()[:height, :width]
    rows, cols = np.mgrid[0:height, 0:width]
    discs = [(cols - cx) ** 2 + (rows - height / 2) ** 2 <= radius**2 for cx, radius in ((130, 85), (235, 80))]
    image = background.copy()
    image[discs[0] | discs[1]] = texture[discs[0] | discs[1]]
    return np.ascontiguousarray(image), [SceneObject(d) for d in discs]
