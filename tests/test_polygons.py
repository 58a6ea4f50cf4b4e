"""Masks -> outline polygons -> rasterised back: accuracy at the default tolerance, the tolerance's
meaning, parts, tiny islands, holes and objects at the image border."""

import cv2
import numpy as np
import pytest
from scipy import ndimage

from backend.polygons import mask_polygons, polygon_mask
from backend.project_options import ProjectOptions

W, H = 320, 240
ROWS, COLS = np.mgrid[0:H, 0:W] + 0.5  # pixel centres
DEFAULT_TOLERANCE_PX = ProjectOptions().polygon_tolerance_px


def iou(a, b):
    return float((a & b).sum() / (a | b).sum())


def disc(cx, cy, r):
    return (COLS - cx) ** 2 + (ROWS - cy) ** 2 <= r**2


def ellipse(cx, cy, rx, ry, degrees):
    t = np.radians(degrees)
    u, v = (COLS - cx) * np.cos(t) + (ROWS - cy) * np.sin(t), -(COLS - cx) * np.sin(t) + (ROWS - cy) * np.cos(t)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1


def filled(points):
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [np.array(points, np.int32)], 1)
    return mask > 0


def blob(seed):
    """The largest part of smoothed noise, holes filled: an irregular outline of concave and convex bends."""
    noise = cv2.GaussianBlur(np.random.default_rng(seed).random((H, W)), (0, 0), 12) > 0.5
    parts, labels = cv2.connectedComponents(noise.astype(np.uint8), connectivity=8)
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return ndimage.binary_fill_holes(largest)


SOLID_SHAPES = {
    "disc r=20": disc(100.3, 90.6, 20),
    "disc r=100": disc(160, 120, 100),
    "ellipse, turned 30 deg": ellipse(150, 110, 90, 35, 30),
    "turned rectangle": filled([(60, 40), (250, 100), (225, 190), (35, 130)]),
    "star (concave)": filled([(160 + r * np.sin(a), 120 - r * np.cos(a))
                              for a, r in zip(np.linspace(0, 2 * np.pi, 10, endpoint=False), [100, 45] * 5)]),
    "blob": blob(seed=3),
}


def roundtrip(mask, tolerance=DEFAULT_TOLERANCE_PX):
    polygons = mask_polygons(mask, tolerance)
    return np.logical_or.reduce([polygon_mask(p, W, H) for p in polygons]), polygons


@pytest.mark.parametrize("name", SOLID_SHAPES)
def test_solid_shapes_come_back_at_iou_097_at_the_default_tolerance(name):
    mask = SOLID_SHAPES[name]
    assert (cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1) == 1, "one part per shape"
    back, polygons = roundtrip(mask)
    assert len(polygons) == 1
    assert iou(back, mask) >= 0.97, f"{name}: IoU {iou(back, mask):.4f}"
    [exact] = mask_polygons(mask, 0)
    outline_px = cv2.arcLength(exact.astype(np.float32), closed=True)
    assert 3 <= len(polygons[0]) <= outline_px / 8, f"{name}: {len(polygons[0])} vertices for {outline_px:.0f} px"


@pytest.mark.parametrize("name", SOLID_SHAPES)
def test_tolerance_zero_follows_the_pixels_exactly(name):
    back, _ = roundtrip(SOLID_SHAPES[name], tolerance=0)
    assert np.array_equal(back, SOLID_SHAPES[name])


@pytest.mark.parametrize("tolerance", [0.5, 1.0, 3.0])
def test_the_polygon_stays_within_the_tolerance_of_the_pixel_outline(tolerance):
    mask = SOLID_SHAPES["star (concave)"]
    back, _ = roundtrip(mask, tolerance)
    # every pixel that changed lies within tolerance (+ half a pixel diagonal) of the outline
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    changed = back != mask
    assert changed.any() or tolerance < 1
    assert np.max(np.where(mask, inside, outside)[changed], initial=0) <= tolerance + 0.75


def test_a_larger_tolerance_gives_fewer_vertices():
    counts = [len(mask_polygons(SOLID_SHAPES["disc r=100"], t)[0]) for t in (0, 0.5, 1, 2, 4)]
    assert counts == sorted(counts, reverse=True) and counts[0] > 4 * counts[2]


def test_a_rectangle_is_four_corners_on_the_pixel_edges():
    mask = np.zeros((H, W), bool)
    mask[10:50, 20:90] = True
    [polygon] = mask_polygons(mask, DEFAULT_TOLERANCE_PX)
    assert sorted(map(tuple, polygon.tolist())) == [(20, 10), (20, 50), (90, 10), (90, 50)]


def test_one_polygon_per_part_largest_first_and_diagonal_neighbours_are_one_part():
    mask = np.zeros((H, W), bool)
    mask[10:20, 10:20] = True  # 100 px
    mask[100:140, 200:240] = True  # 1600 px
    mask[50:60, 50:60] = True
    mask[60:70, 60:70] = True  # touches the square above at one corner only: same part (8-connected)
    polygons = mask_polygons(mask, DEFAULT_TOLERANCE_PX)
    assert len(polygons) == 3
    areas = [polygon_mask(p, W, H).sum() for p in polygons]
    assert areas == [1600, 200, 100]
    assert np.array_equal(np.logical_or.reduce([polygon_mask(p, W, H) for p in polygons]), mask)


@pytest.mark.parametrize("pixels", [[(5, 7)], [(5, 7), (6, 7)], [(5, 7), (6, 8)], [(5, 7), (5, 8), (5, 9), (5, 10)]])
def test_tiny_islands_keep_a_polygon_of_their_own_pixels(pixels):
    mask = np.zeros((H, W), bool)
    for x, y in pixels:
        mask[y, x] = True
    polygons = mask_polygons(mask, DEFAULT_TOLERANCE_PX)
    assert len(polygons) == 1 and len(polygons[0]) >= 3
    assert np.array_equal(polygon_mask(polygons[0], W, H), mask)


def test_holes_are_covered_and_islands_in_them_dropped():
    ring = disc(160, 120, 80) & ~disc(160, 120, 40)
    island = disc(160, 120, 10)
    polygons = mask_polygons(ring | island, DEFAULT_TOLERANCE_PX)
    assert len(polygons) == 1
    assert iou(polygon_mask(polygons[0], W, H), disc(160, 120, 80)) >= 0.97


def test_objects_at_the_image_border_reach_it_exactly():
    whole = np.ones((H, W), bool)
    [polygon] = mask_polygons(whole, DEFAULT_TOLERANCE_PX)
    assert sorted(map(tuple, polygon.tolist())) == [(0, 0), (0, H), (W, 0), (W, H)]
    corner = disc(W, H, 60)  # a quarter disc in the bottom-right corner
    [polygon] = mask_polygons(corner, DEFAULT_TOLERANCE_PX)
    assert polygon[:, 0].max() == W and polygon[:, 1].max() == H
    assert polygon.min() >= 0
    assert iou(polygon_mask(polygon, W, H), corner) >= 0.97


def test_a_polygon_crossing_too_many_rows_is_refused():
    zigzag = np.array([(x, 0 if x % 2 else 10_000) for x in range(1000)], float)  # 999 edges x 10000 rows
    with pytest.raises(ValueError, match="too complex"):
        polygon_mask(zigzag, 1000, 10_000)


def test_empty_mask_and_bad_input():
    assert mask_polygons(np.zeros((H, W), bool), 1.0) == []
    with pytest.raises(ValueError, match="2-D"):
        mask_polygons(np.zeros((2, H, W), bool), 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        mask_polygons(np.ones((H, W), bool), -1)


@pytest.mark.parametrize("seed", range(5))
def test_rasterising_matches_a_pixel_centre_point_in_polygon_test(seed):
    """Against skimage's polygon fill (pixel centres inside, even-odd) on simple polygons with
    vertices anywhere, some outside the image."""
    from skimage.draw import polygon as reference_fill

    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radii = rng.uniform(20, 200, 40)
    points = np.stack([160 + radii * np.cos(angles), 120 + radii * np.sin(angles)], axis=1)
    rows, cols = reference_fill(points[:, 1] - 0.5, points[:, 0] - 0.5, shape=(H, W))
    expected = np.zeros((H, W), bool)
    expected[rows, cols] = True
    assert np.array_equal(polygon_mask(points, W, H), expected)


def test_a_self_crossing_polygon_fills_by_the_nonzero_rule_as_the_canvas_does():
    star = [(160 + 100 * np.sin(a), 120 - 100 * np.cos(a)) for a in np.arange(5) * 4 * np.pi / 5]  # a pentagram
    mask = polygon_mask(np.array(star), W, H)
    assert mask[120, 160]  # the inner pentagon, wound twice: inside (even-odd would leave it empty)
    assert not polygon_mask(np.array([(0, 0), (10, 0), (10, 10)]), W, H)[9, 0]


@pytest.mark.parametrize("name", ["disc r=20", "star (concave)", "blob"])
def test_pycocotools_rasterises_the_polygons_to_the_same_pixels(name):
    """The vertex frame is COCO's: a COCO export of the polygons (pixel coordinates) decodes to the mask."""
    from pycocotools import mask as coco_mask

    mask = SOLID_SHAPES[name]
    [polygon] = mask_polygons(mask, 0)
    decoded = coco_mask.decode(coco_mask.frPyObjects([polygon.reshape(-1).tolist()], H, W))[:, :, 0] > 0
    assert np.array_equal(decoded, mask)
