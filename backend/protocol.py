"""Label Studio region JSON <-> natural-image pixels, brush masks and polygons.

Coordinate frames (verified in Label Studio 1.23's editor, ``web/libs/editor``):

- A region's ``value`` (x, y, width, height) is in percent of the *natural* image, i.e. the
  image as the browser decodes it (EXIF orientation applied). ``x_px = x / 100 * W``.
- ``image_rotation`` (0/90/180/270) is only the annotator's *view*: the editor rotates the
  whole canvas (Konva stage), while regions keep coordinates in the unrotated image, and
  ``original_width``/``original_height`` stay the unrotated natural size
  (``createSerializedResult`` reads ``naturalWidth``/``naturalHeight``, which rotation does not
  swap). So the backend converts coordinates the same way at any rotation, makes masks at the
  unrotated natural size, and echoes the prompt's ``image_rotation`` on its regions.
- A rectangle's own ``value.rotation`` (degrees, clockwise) turns the box about its top-left
  corner in pixel space; the prompt uses the axis-aligned bounds of the turned box.

Percent values are scaled by the size of the image the backend loaded, not by the region's
``original_width``/``original_height`` (which may come from another resolution, e.g. a detector's
imported boxes); masks always have the loaded image's size.

A polygon's ``value.points`` are [x, y] pairs in percent of the natural image, like a keypoint's
x and y; a vertex at (0, 0) is the image's top-left corner (``backend.polygons`` frame).
"""

from __future__ import annotations

import math
import uuid

import numpy as np

from backend.brush_rle import decode_brush_mask, encode_brush_rle
from backend.polygons import polygon_mask

# Label Studio stores floats; allow rounding noise at the image border, then clip.
PERCENT_TOLERANCE = 1e-3


class RegionError(ValueError):
    """A region cannot be used (outside the image, zero area, malformed); the message says which and why."""


def _number(value: dict, key: str, what: str) -> float:
    number = value.get(key)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise RegionError(f"{what} has no numeric value.{key}")
    return float(number)


def _percent(value: dict, key: str, what: str) -> float:
    number = _number(value, key, what)
    if not -PERCENT_TOLERANCE <= number <= 100 + PERCENT_TOLERANCE:
        raise RegionError(f"{what} is outside the image ({key}={number:g}%, expected 0-100)")
    return min(max(number, 0.0), 100.0)


def point_px(value: dict, width: int, height: int, what: str = "keypoint") -> tuple[float, float]:
    """A keypoint's (x, y) in natural-image pixels; ``value`` holds x, y in percent."""
    return _percent(value, "x", what) / 100 * width, _percent(value, "y", what) / 100 * height


def box_px(value: dict, width: int, height: int, what: str = "rectangle") -> tuple[float, float, float, float]:
    """A rectangle's (x0, y0, x1, y1) in natural-image pixels, axis-aligned, clipped to the image.

    ``value`` holds x, y, width, height in percent and an optional ``rotation`` in degrees
    (clockwise about the top-left corner). Raises RegionError when the corner is outside the
    image or the box is thinner than one pixel.
    """
    x, y = point_px(value, width, height, what)
    w = _number(value, "width", what) / 100 * width
    h = _number(value, "height", what) / 100 * height
    angle = math.radians(float(value.get("rotation") or 0.0))
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    box = max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), float(width)), min(max(ys), float(height))
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise RegionError(
            f"{what} has zero area inside the image ({box[2] - box[0]:.2f} x {box[3] - box[1]:.2f} px); "
            "draw a box at least one pixel wide and high"
        )
    return box


def region_from_mask(
    mask: np.ndarray,
    *,
    label: str,
    from_name: str,
    to_name: str,
    score: float,
    image_rotation: int = 0,
    model: str = "",
) -> dict:
    """A BrushLabels region for ``mask`` (H, W), bool or 0/1, at the natural image size.

    The RLE encodes uint8 0/255 (Label Studio renders 0/1 almost invisibly). ``score`` is clipped
    to [0, 1]; ``model`` names the segmenter in the region's ``meta.text`` (shown in the region's
    details in Label Studio). Every call makes a fresh ``id``: regions with equal ids merge in the UI.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    height, width = mask.shape
    value = {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": [label]}
    return _region("brushlabels", value, width, height, from_name, to_name, score, image_rotation, model)


def region_from_polygon(
    points: np.ndarray,
    width: int,
    height: int,
    *,
    label: str,
    from_name: str,
    to_name: str,
    score: float,
    image_rotation: int = 0,
    model: str = "",
) -> dict:
    """A PolygonLabels region for ``points`` (N >= 3, 2): (x, y) vertices in natural-image pixels of
    an image of ``width`` x ``height``; ``score``, ``model`` and ``id`` as for ``region_from_mask``."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(points)}")
    percent = np.clip(points / (width, height) * 100, 0.0, 100.0)
    value = {"points": percent.tolist(), "closed": True, "polygonlabels": [label]}
    return _region("polygonlabels", value, width, height, from_name, to_name, score, image_rotation, model)


def _region(region_type: str, value: dict, width: int, height: int, from_name: str, to_name: str, score: float,
            image_rotation: int, model: str) -> dict:
    region = {
        "id": uuid.uuid4().hex[:10],
        "from_name": from_name,
        "to_name": to_name,
        "type": region_type,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": int(image_rotation),
        "value": value,
        "score": min(max(float(score), 0.0), 1.0),
    }
    if model:
        region["meta"] = {"text": [model]}
    return region


def mask_from_region(region: dict, width: int, height: int) -> np.ndarray:
    """The bool mask (height, width) of a PolygonLabels region (``type`` "polygonlabels": the
    pixels whose centres the polygon holds) or a BrushLabels region (``value.format == "rle"``).

    Raises RegionError when the points or the RLE are missing, corrupt, or (RLE) of another size.
    """
    value = region.get("value") or {}
    if region.get("type") == "polygonlabels":
        try:
            return polygon_mask(polygon_px(value, width, height), width, height)
        except ValueError as exc:  # too complex
            raise RegionError(f"polygon region: {exc}") from None
    rle = value.get("rle")
    if value.get("format", "rle") != "rle" or not isinstance(rle, list) or len(rle) < 4:
        raise RegionError("brush region has no RLE mask")
    if not all(isinstance(v, int) and 0 <= v <= 255 for v in rle):
        raise RegionError("brush region's RLE is not a list of bytes")
    values = int.from_bytes(bytes(rle[:4]), "big")  # the header's count, checked before allocating it
    if values != width * height * 4:
        raise RegionError(f"brush region's mask has {values // 4} pixels, the image has {width} x {height}")
    try:
        return decode_brush_mask(rle, width, height)
    except ValueError:
        raise RegionError("brush region's RLE cannot be decoded") from None


def polygon_px(value: dict, width: int, height: int, what: str = "polygon") -> np.ndarray:
    """A polygon's vertices (N >= 3, 2) in natural-image pixels; ``value.points`` holds [x, y] percent pairs."""
    points = value.get("points")
    if not isinstance(points, list) or len(points) < 3:
        raise RegionError(f"{what} has no value.points list of at least 3 [x, y] points")
    pixels = []
    for point in points:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise RegionError(f"{what} has a point that is not an [x, y] pair: {point!r}")
        pixels.append(point_px({"x": point[0], "y": point[1]}, width, height, what))
    return np.array(pixels, np.float64)


def task_entry(regions: list[dict], model_version: str) -> dict:
    """One task's prediction: its regions, their mean score (0 when empty), and the model version."""
    score = float(np.mean([r["score"] for r in regions])) if regions else 0.0
    return {"result": regions, "score": score, "model_version": model_version}
