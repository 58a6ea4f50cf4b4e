"""Prompts derived from a ground-truth mask: extreme points (DEXTR-style, with jitter) and boxes.

All coordinates are natural-image pixels (``backend.prompts`` frame): a pixel (col, row) is the
unit square whose centre is (col + 0.5, row + 0.5).
"""

from __future__ import annotations

import numpy as np


def extreme_points(mask: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.0) -> np.ndarray:
    """(4, 2) float32 (x, y): left-most, right-most, top-most and bottom-most pixel centres of a
    non-empty (H, W) bool mask. With `rng`, each point is a random mask pixel within `jitter`
    times the mask's larger extent of the extreme (as a human click would be), plus Gaussian
    noise of a third of that, clipped to the image."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot derive extreme points from an empty mask")
    points = []
    tolerance = jitter * max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) if rng is not None else 0.0
    for values, pick_max in ((xs, False), (xs, True), (ys, False), (ys, True)):
        extreme = values.max() if pick_max else values.min()
        candidates = np.flatnonzero(np.abs(values - extreme) <= tolerance)
        i = candidates[rng.integers(len(candidates))] if rng is not None else candidates[len(candidates) // 2]
        points.append((xs[i] + 0.5, ys[i] + 0.5))
    points = np.array(points, np.float32)
    if rng is not None and tolerance > 0:
        points += rng.normal(0, tolerance / 3, points.shape).astype(np.float32)
        points = np.clip(points, 0, [mask.shape[1], mask.shape[0]]).astype(np.float32)
    return points


def mask_box(mask: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.0) -> tuple[float, float, float, float]:
    """Tight natural-pixel box (x0, y0, x1, y1) of a non-empty bool mask; with `rng`, each side moves
    by Gaussian noise of `jitter` times the box side (an annotator's imprecise rectangle)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot derive a box from an empty mask")
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    if rng is not None and jitter > 0:
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        box = box + rng.normal(0, jitter, 4) * size
        box = np.clip(box, 0, [mask.shape[1], mask.shape[0]] * 2)
        box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
    return tuple(float(v) for v in box)
