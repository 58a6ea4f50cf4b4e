"""Crop geometry and network inputs shared by training and inference.

Frames: *natural* pixels (see ``backend.prompts``: (0, 0) is the top-left corner of the image)
and *crop* pixels of a square crop of side ``size`` (same convention inside the crop). A crop
covers an integer rectangle of the natural image, the ``CropWindow``, which may extend past
the image borders; the part outside is padded with grey. The window is the prompt's box plus a
relative margin, its shorter side widened to at least half the longer one so that thin objects
are stretched at most 2x when resized to the square network input. Correction clicks are two more
input channels; a positive click outside the window grows the prompt box (``box_with_clicks``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Inputs are scaled to [-1, 1] (the EfficientNet-Lite TensorFlow convention); padding is mid-grey = 0.
PAD_VALUE = 128
HEATMAP_SIGMA = 0.02  # Gaussian sigma of a point's heatmap, as a fraction of the crop side


@dataclass(frozen=True)
class CropWindow:
    """Integer natural-pixel rectangle [x0, x1) x [y0, y1) that a square crop covers."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def to_crop(self, xy: np.ndarray, size: int) -> np.ndarray:
        """Natural (x, y) coordinates (N, 2) -> crop pixel coordinates of a size x size crop."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        scale = np.array([size / self.width, size / self.height])
        return (xy - [self.x0, self.y0]) * scale

    def box_to_crop(self, box: tuple[float, float, float, float], size: int) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.to_crop(np.array([box[:2], box[2:]]), size)
        return (x0, y0, x1, y1)

    def extract(self, array: np.ndarray, size: int, pad_value: float = PAD_VALUE) -> np.ndarray:
        """Resample the window of an (H, W[, C]) array to (size, size[, C]); area-averaged when shrinking."""
        height, width = array.shape[:2]
        canvas = np.full((self.height, self.width) + array.shape[2:], pad_value, array.dtype)
        ix0, iy0 = max(self.x0, 0), max(self.y0, 0)
        ix1, iy1 = min(self.x1, width), min(self.y1, height)
        if ix1 > ix0 and iy1 > iy0:
            canvas[iy0 - self.y0 : iy1 - self.y0, ix0 - self.x0 : ix1 - self.x0] = array[iy0:iy1, ix0:ix1]
        shrinking = self.width > size or self.height > size
        return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def paste(self, crop: np.ndarray, image_shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
        """The mask of a (size, size) float crop in the natural frame: (H, W) bool, true where the crop
        resampled to the window exceeds ``threshold``, false outside the window. Only the window is
        resampled in floats (a float buffer of the whole image would cost 4 bytes a pixel)."""
        height, width = image_shape
        out = np.zeros((height, width), bool)
        ix0, iy0 = max(self.x0, 0), max(self.y0, 0)
        ix1, iy1 = min(self.x1, width), min(self.y1, height)
        if ix1 <= ix0 or iy1 <= iy0:
            return out
        # Resample only the visible part: crop pixel u covers natural x0 + (u + 0.5) * width / size.
        size = crop.shape[0]
        sx, sy = size / self.width, size / self.height
        map_x = ((np.arange(ix0, ix1) + 0.5 - self.x0) * sx - 0.5).astype(np.float32)
        map_y = ((np.arange(iy0, iy1) + 0.5 - self.y0) * sy - 0.5).astype(np.float32)
        grid_x, grid_y = np.meshgrid(map_x, map_y)
        out[iy0:iy1, ix0:ix1] = cv2.remap(
            crop.astype(np.float32), grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        ) > threshold
        return out


def crop_window(box: tuple[float, float, float, float], margin: float, min_side: int = 16) -> CropWindow:
    """The window around a natural-pixel box (x0, y0, x1, y1): each side grows by `margin` times the
    box's larger side, the shorter side is widened to at least half the longer one, and the window
    is at least `min_side` pixels wide, centred on the box."""
    x0, y0, x1, y1 = box
    if not (x1 >= x0 and y1 >= y0) or not all(math.isfinite(v) for v in box):
        raise ValueError(f"invalid box {box}")
    longer = max(x1 - x0, y1 - y0, 1.0)
    pad = margin * longer
    width = max(x1 - x0 + 2 * pad, 0.5 * (longer + 2 * pad), min_side)
    height = max(y1 - y0 + 2 * pad, 0.5 * (longer + 2 * pad), min_side)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return CropWindow(
        math.floor(cx - width / 2), math.floor(cy - height / 2), math.ceil(cx + width / 2), math.ceil(cy + height / 2)
    )


def point_heatmap(points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32: the maximum of Gaussians (peak 1) centred on crop-pixel points (N, 2)."""
    sigma = HEATMAP_SIGMA * size
    centres = np.arange(size, dtype=np.float32) + 0.5
    heatmap = np.zeros((size, size), np.float32)
    for x, y in np.asarray(points, np.float32).reshape(-1, 2):
        gx = np.exp(-((centres - x) ** 2) / (2 * sigma**2))
        gy = np.exp(-((centres - y) ** 2) / (2 * sigma**2))
        np.maximum(heatmap, np.outer(gy, gx), out=heatmap)
    return heatmap


def box_channel(box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """(size, size) float32: 1 on crop pixels whose centre lies inside the crop-pixel box, else 0."""
    centres = np.arange(size, dtype=np.float32) + 0.5
    inside_x = (centres >= box[0]) & (centres <= box[2])
    inside_y = (centres >= box[1]) & (centres <= box[3])
    return np.outer(inside_y, inside_x).astype(np.float32)


def network_input(
    image_crop: np.ndarray,
    points: np.ndarray,
    box: tuple[float, float, float, float],
    positive: np.ndarray | None = None,
    negative: np.ndarray | None = None,
) -> np.ndarray:
    """(7, S, S) float32 input of the coarse net from an (S, S, 3) uint8 crop, crop-pixel points
    (4, 2) (empty for a box prompt), the crop-pixel prompt box and crop-pixel correction clicks
    (k, 2), positive and negative (none by default): RGB, heatmap, box channel, positive clicks,
    negative clicks. A click is a Gaussian like an extreme point's (``point_heatmap``)."""
    size = image_crop.shape[0]
    rgb = image_crop.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    clicks = [point_heatmap(np.zeros((0, 2)) if c is None else c, size)[None] for c in (positive, negative)]
    return np.concatenate([rgb, point_heatmap(points, size)[None], box_channel(box, size)[None], *clicks])


def box_with_clicks(
    box: tuple[float, float, float, float], positive: np.ndarray, margin: float
) -> tuple[float, float, float, float]:
    """The prompt box, grown to contain every positive natural-pixel click (k, 2) when one lies
    outside its crop window: the annotator marks a part the extreme points (or the box) left out,
    so the points were wrong there. Clicks inside the window leave the box (and the crop) as they
    are; negative clicks never move it (outside the window the mask is empty anyway)."""
    positive = np.asarray(positive, np.float64).reshape(-1, 2)
    window = crop_window(box, margin)
    outside = (
        (positive[:, 0] < window.x0) | (positive[:, 0] > window.x1)
        | (positive[:, 1] < window.y0) | (positive[:, 1] > window.y1)
    )
    if not outside.any():
        return box
    (x0, y0), (x1, y1) = positive.min(axis=0), positive.max(axis=0)
    return (min(box[0], x0), min(box[1], y0), max(box[2], x1), max(box[3], y1))
