"""Simulated correction clicks (the RITM protocol): where an annotator clicks to fix a mask.

The next click goes to the largest error region of a prediction against the true mask: a
positive click when that region is a missed part (true but not predicted), a negative one when it
is a spill (predicted but not true). It lands on the region's most interior pixel, the one
farthest from the region's outline (the image frame counts as outline: nobody clicks on the
frame), optionally jittered like a human hand. Training (simulated corrections) and the
interactive benchmark use this one function, and ``with_click`` to add the click to a prompt.

Coordinates are those of ``backend.prompts``: pixel (col, row) is the unit square whose centre is
(col + 0.5, row + 0.5); the masks may be natural images or crops alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import cv2
import numpy as np

from backend.prompts import Prompt


class Click(NamedTuple):
    x: float
    y: float
    positive: bool


def next_click(
    predicted: np.ndarray, truth: np.ndarray, rng: np.random.Generator | None = None, jitter_px: float = 0.0
) -> Click | None:
    """The click that fixes the largest error region of (H, W) bool `predicted` against `truth`,
    or None when they agree. Error regions are 8-connected components of the missed pixels and of
    the spilled pixels; the largest by area wins (missed before spilled on a tie). The click is the
    region's pixel farthest from its outline (first in row-major order on a tie), moved by up to
    `jitter_px` pixels in a uniformly random direction (with `rng`); a jitter that leaves the region
    falls back to the unjittered pixel, so a click never contradicts the truth."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    if predicted.shape != truth.shape or predicted.ndim != 2:
        raise ValueError(f"masks must be two (H, W) arrays of one shape, got {predicted.shape} and {truth.shape}")
    best: tuple[int, np.ndarray, bool] | None = None
    for errors, positive in ((truth & ~predicted, True), (predicted & ~truth, False)):
        if not errors.any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(errors.astype(np.uint8), connectivity=8)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[largest, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, labels == largest, positive)
    if best is None:
        return None
    _, region, positive = best
    row, col = _most_interior(region)
    if rng is not None and jitter_px > 0:
        angle, radius = rng.uniform(0, 2 * np.pi), jitter_px * np.sqrt(rng.uniform())
        moved_col = int(np.floor(col + 0.5 + radius * np.cos(angle)))
        moved_row = int(np.floor(row + 0.5 + radius * np.sin(angle)))
        if 0 <= moved_row < region.shape[0] and 0 <= moved_col < region.shape[1] and region[moved_row, moved_col]:
            row, col = moved_row, moved_col
    return Click(float(col + 0.5), float(row + 0.5), positive)


def _most_interior(region: np.ndarray) -> tuple[int, int]:
    """(row, col) of the region pixel with the largest distance to the nearest pixel outside it,
    the image frame counting as outside."""
    padded = np.pad(region.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(row), int(col)


def with_click(prompt: Prompt, x: float, y: float, positive: bool) -> Prompt:
    """``prompt`` with one more correction click after its points (EXTREME: rows 4.. are clicks;
    BOX: every point is a click)."""
    points = np.concatenate([np.asarray(prompt.points, np.float32).reshape(-1, 2), [[x, y]]]).astype(np.float32)
    labels = np.concatenate([np.asarray(prompt.point_labels, np.int64).reshape(-1), [int(positive)]])
    return replace(prompt, points=points, point_labels=labels)
