"""The value types shared by serving, training and evaluation: the image a segmenter works on
(``LoadedImage``), the prompt, and the segmentation that answers it.

Coordinate frame everywhere inside the backend: pixels of the *natural* image, i.e. after
EXIF transpose, with x to the right and y down, (0, 0) the top-left corner of the top-left
pixel, and (W, H) the bottom-right corner of the image. Label Studio percents convert as
``x_px = x_percent / 100 * W`` (see ``backend.protocol``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


EXTREME_POINTS = 4  # an EXTREME prompt's first points: left-, right-, top- and bottom-most, any order


class PromptKind(str, Enum):
    # A rectangle, optionally with clicks -> SAM (inside the box), or the custom model's box mode
    # (correction clicks: positive adds a missed part, negative removes a spill).
    BOX = "box"
    POINTS = "points"  # positive/negative clicks -> SAM
    # 4 positive extreme points, then any correction clicks in the order clicked -> custom model.
    EXTREME = "extreme"


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded natural image (``backend.pixels`` makes one from any file or download).

    array: (H, W, 3) uint8 RGB, EXIF orientation applied; read-only where a cache shares it.
    key: a stable id of the image content (e.g. the sha1 of its bytes), for caching embeddings.
    """

    array: np.ndarray
    key: str

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])


class PromptError(ValueError):
    """A prompt a segmenter cannot answer as given (wrong kind, no box, too few points, outside the
    image, no area): the annotator's input, not a bug. The message is meant for the user."""


@dataclass(frozen=True)
class Prompt:
    """One object to segment.

    box: (x0, y0, x1, y1) in natural-image pixels, or None.
    points: float array (N, 2) of (x, y) natural-image pixels (N may be 0). For EXTREME, N >= 4:
        rows 0-3 are the extreme points (label 1), rows 4.. correction clicks in the order clicked.
        For a BOX the custom model answers, every row is a correction click.
    point_labels: int array (N,), 1 = positive click (adds a missed part), 0 = negative click
        (removes a spill); one label per point.
    label: the BrushLabels label the resulting mask gets.
    """

    kind: PromptKind
    label: str
    box: tuple[float, float, float, float] | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


@dataclass
class Segmentation:
    """A segmenter's answer to one prompt: a bool mask (H, W) of the natural image and a
    confidence in [0, 1] (SAM's predicted IoU, or the custom model's own estimate)."""

    mask: np.ndarray
    score: float
    label: str
    model: str  # which segmenter produced it, e.g. "sam-vit_b" or "extreme-v3"
    stage_ms: dict[str, float] = field(default_factory=dict)  # wall time of the segmenter's stages, where it has them
