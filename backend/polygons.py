"""Masks <-> polygons: outer outlines of a mask's parts, simplified, and polygons rasterised back.

Frame: natural-image pixels with (0, 0) the top-left *corner* of the top-left pixel (the frame of
``backend.prompts``, and of a Label Studio polygon's percent points times the image size). Pixel
(col, row) is the square [col, col + 1] x [row, row + 1]; a polygon covers a pixel when it
contains the pixel's centre (col + 0.5, row + 0.5).

The outline of a part runs along its pixels' edges, not through the centres of its border pixels
(as OpenCV's contours do): a centre-line outline would shave half a pixel off every side, which
costs a 20 px object a tenth of its area. ``mask_polygons`` therefore traces the contour on a grid
of half-pixel steps holding the pixels' centres, edge midpoints and corners, where a point is set
when it touches a mask pixel: the border points of that grid are exactly the pixels' edges.
"""

from __future__ import annotations

import cv2
import numpy as np

_SQUARE = np.ones((3, 3), np.uint8)
# A polygon whose edges cross more pixel rows than this in all is refused by ``polygon_mask``
# (about 40 bytes of work arrays each): a traced outline crosses a row a few dozen times at most,
# while a zigzag of many tall edges, e.g. from a crafted request, would cost gigabytes.
MAX_ROW_CROSSINGS = 4_000_000


def mask_polygons(mask: np.ndarray, tolerance_px: float) -> list[np.ndarray]:
    """The outer outline of each 8-connected part of ``mask`` (H, W) as a float array (N, 2) of
    (x, y) vertices, N >= 3, largest part first. Holes are not traced (a part's polygon covers them).

    tolerance_px: the simplified outline stays within this distance of the pixels' outline
    (Douglas-Peucker); 0 keeps every corner. A part too small for the tolerance keeps the
    largest tolerance that still leaves it an area, down to its exact outline.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    if not mask.any():
        return []
    x0, y0, width, height = cv2.boundingRect(mask.astype(np.uint8))
    crop = mask[y0:y0 + height, x0:x0 + width]
    # Half-pixel grid, padded by one point so no contour touches the grid's border: pixel centre
    # (col, row) at grid (2 col + 2, 2 row + 2), its corners and edge midpoints around it.
    grid = np.zeros((2 * height + 3, 2 * width + 3), np.uint8)
    grid[2:-2:2, 2:-2:2] = crop
    grid = cv2.dilate(grid, _SQUARE)
    contours, _ = cv2.findContours(grid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        simplified = _simplify(contour, epsilon=2.0 * tolerance_px)  # grid units are half pixels
        points = simplified.reshape(-1, 2).astype(np.float64) / 2.0 - 0.5 + (x0, y0)
        polygons.append((cv2.contourArea(simplified), points))
    polygons.sort(key=lambda item: -item[0])
    return [points for _, points in polygons]


def _simplify(contour: np.ndarray, epsilon: float) -> np.ndarray:
    """Douglas-Peucker at ``epsilon``, halved until the outline keeps an area (a tiny part would
    otherwise collapse to a line), ending with the exact contour."""
    while epsilon >= 0.5:
        simplified = cv2.approxPolyDP(contour, epsilon, closed=True)
        if len(simplified) >= 3 and cv2.contourArea(simplified) > 0:
            return simplified
        epsilon /= 2
    return contour


def polygon_mask(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """The bool mask (height, width) of the pixels whose centres lie inside the polygon ``points``
    (N, 2) of (x, y) vertices in the frame above, by the nonzero winding rule (the rule of the
    browser canvas Label Studio draws polygons on). A scanline fill in whole-array numpy: time
    grows with the polygon's box and its number of edge crossings, not with area times vertices.
    Raises ValueError beyond ``MAX_ROW_CROSSINGS``."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    # Edge e crosses the centre lines y = row + 0.5 of rows first[e] <= row < last[e] (half-open,
    # so a vertex on a centre line counts once and horizontal edges never).
    first = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, height).astype(np.int64)
    last = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, height).astype(np.int64)
    counts = np.maximum(last - first, 0)
    if counts.sum() > MAX_ROW_CROSSINGS:
        raise ValueError(f"the polygon's {len(points)} edges cross pixel rows {counts.sum()} times, more than "
                         f"{MAX_ROW_CROSSINGS}: too complex to rasterise")
    edge = np.repeat(np.arange(len(points)), counts)
    rows = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - first, counts)
    t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xs = x0[edge] + t * (x1[edge] - x0[edge])
    direction = np.where(y1[edge] > y0[edge], 1, -1)
    order = np.lexsort((xs, rows))
    rows, xs, direction = rows[order], xs[order], direction[order]
    # Every row's crossings sum to zero winding, so one running sum serves all rows; the span after
    # crossing i (up to crossing i + 1, same row) is inside when the winding there is not zero.
    inside = np.flatnonzero(np.cumsum(direction)[:-1] != 0)
    starts = np.clip(np.ceil(xs[inside] - 0.5), 0, width).astype(np.int64)
    ends = np.clip(np.ceil(xs[inside + 1] - 0.5), 0, width).astype(np.int64)
    mask = np.zeros((height, width), bool)
    if not inside.size:
        return mask
    # Filled within the spans' bounding box only, so a small part of a large image costs little.
    # Spans do not overlap, so the running sum of +1 at a span's start and -1 at its end is 0 or 1.
    top, left = int(rows[inside].min()), int(starts.min())
    marks = np.zeros((int(rows[inside].max()) + 1 - top, int(ends.max()) + 1 - left), np.int8)
    np.add.at(marks, (rows[inside] - top, starts - left), 1)
    np.add.at(marks, (rows[inside] - top, ends - left), -1)
    mask[top:top + marks.shape[0], left:left + marks.shape[1] - 1] = np.cumsum(marks, axis=1, dtype=np.int8)[:, :-1] > 0
    return mask
