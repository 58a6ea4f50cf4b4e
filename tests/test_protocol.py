"""Percent <-> pixels, rectangle rotation, image_rotation, brush RLE and the region/entry JSON."""

import re

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

from backend.protocol import RegionError, box_px, mask_from_region, point_px, polygon_px, region_from_mask, \
    region_from_polygon, task_entry

W, H = 200, 100
CONFIG = """<View><Image name="image" value="$image" rotateControl="true"/>
  <BrushLabels name="mask" toName="image"><Label value="Car"/></BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="Car"/></PolygonLabels>
  <RectangleLabels name="box" toName="image"><Label value="Car"/></RectangleLabels></View>"""


def test_percent_to_natural_pixels():
    assert point_px({"x": 25.0, "y": 50.0}, W, H) == (50.0, 50.0)
    assert point_px({"x": 100.0, "y": 0.0}, W, H) == (200.0, 0.0)
    assert box_px({"x": 10, "y": 20, "width": 50, "height": 30}, W, H) == pytest.approx((20, 20, 120, 50))


def test_rounding_noise_at_the_border_is_clipped():
    assert point_px({"x": 100.0004, "y": -0.0004}, W, H) == (200.0, 0.0)


@pytest.mark.parametrize("value", [{"x": 101, "y": 5}, {"x": 5, "y": -3}, {"x": "5", "y": 5}, {"y": 5},
                                   {"x": float("nan"), "y": 5}])
def test_points_outside_the_image_or_malformed_are_errors(value):
    with pytest.raises(RegionError):
        point_px(value, W, H)


def test_zero_area_box_is_an_error():
    with pytest.raises(RegionError, match="zero area"):
        box_px({"x": 10, "y": 10, "width": 0, "height": 20}, W, H)


def test_rotated_rectangle_uses_the_bounds_of_the_turned_box():
    # 40 x 20 px at (100, 40), turned 90 degrees clockwise about its top-left corner (y down):
    # the width now runs down from the corner, the height to its left.
    value = {"x": 50, "y": 40, "width": 20, "height": 20, "rotation": 90}
    assert box_px(value, W, H) == pytest.approx((80, 40, 100, 80))


def test_image_rotation_does_not_change_coordinates():
    """Label Studio rotates only the view: coordinates and original size stay in the unrotated image."""
    for rotation in (0, 90, 180, 270):
        region = {"x": 25.0, "y": 50.0, "image_rotation": rotation}
        assert point_px(region, W, H) == (50.0, 50.0)
    mask = np.zeros((H, W), bool)
    mask[10:20, 30:40] = True
    region = region_from_mask(mask, label="Car", from_name="mask", to_name="image", score=0.5, image_rotation=90)
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (W, H, 90)
    assert np.array_equal(mask_from_region(region, W, H), mask)


def test_region_json_matches_the_protocol_and_validates():
    mask = np.zeros((H, W), bool)
    mask[20:60, 50:150] = True
    region = region_from_mask(mask, label="Car", from_name="mask", to_name="image", score=0.9, model="sam-vit_b")
    assert set(region) == {"id", "from_name", "to_name", "type", "original_width", "original_height",
                           "image_rotation", "value", "score", "meta"}
    assert region["type"] == "brushlabels"
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Car"]
    assert region["meta"] == {"text": ["sam-vit_b"]}
    decoded = decode_rle(region["value"]["rle"]).reshape(H, W, 4)[:, :, 3]
    assert decoded.dtype == np.uint8 and set(np.unique(decoded)) == {0, 255}
    assert np.array_equal(decoded == 255, mask)
    entry = task_entry([region], "v1")
    assert LabelInterface(CONFIG).validate_prediction(entry, return_errors=True) == []


def test_region_ids_are_fresh_and_scores_clipped():
    mask = np.ones((4, 4), bool)
    regions = [region_from_mask(mask, label="Car", from_name="m", to_name="i", score=s) for s in (1.3, -0.1)]
    assert regions[0]["id"] != regions[1]["id"]
    assert [r["score"] for r in regions] == [1.0, 0.0]
    assert "meta" not in regions[0]


def test_entry_score_is_the_mean_and_empty_entry_scores_zero():
    regions = [{"score": 0.2}, {"score": 0.6}]
    assert task_entry(regions, "v")["score"] == pytest.approx(0.4)
    assert task_entry([], "v") == {"result": [], "score": 0.0, "model_version": "v"}


def test_mask_from_region_rejects_other_sizes_and_garbage():
    region = region_from_mask(np.ones((10, 10), bool), label="Car", from_name="m", to_name="i", score=1)
    with pytest.raises(RegionError, match="pixels"):
        mask_from_region(region, 20, 10)
    with pytest.raises(RegionError):
        mask_from_region({"value": {"format": "rle", "rle": []}}, 10, 10)


def test_polygon_region_json_is_in_percent_and_validates():
    points = np.array([(0, 0), (200, 0), (100, 100), (50, 25.5)])
    region = region_from_polygon(points, W, H, label="Car", from_name="outline", to_name="image", score=0.8,
                                 image_rotation=270, model="extreme-v3")
    assert set(region) == {"id", "from_name", "to_name", "type", "original_width", "original_height",
                           "image_rotation", "value", "score", "meta"}
    assert region["type"] == "polygonlabels" and region["image_rotation"] == 270
    assert region["value"] == {"points": [[0, 0], [100, 0], [50, 100], [25, 25.5]], "closed": True,
                               "polygonlabels": ["Car"]}
    assert LabelInterface(CONFIG).validate_prediction(task_entry([region], "v1"), return_errors=True) == []
    with pytest.raises(ValueError, match="at least 3"):
        region_from_polygon(points[:2], W, H, label="Car", from_name="outline", to_name="image", score=1)


def test_a_polygon_region_decodes_to_the_pixels_whose_centres_it_holds():
    region = {"type": "polygonlabels", "value": {"points": [[10, 10], [30, 10], [30, 50], [10, 50]],
                                                 "polygonlabels": ["Car"]}}
    assert np.array_equal(mask_from_region(region, W, H), _box(20, 10, 60, 50))
    assert polygon_px(region["value"], W, H).tolist() == [[20, 10], [60, 10], [60, 50], [20, 50]]


@pytest.mark.parametrize("value, message", [
    ({"points": [[10, 10], [30, 10]]}, "at least 3"),
    ({}, "at least 3"),
    ({"points": [[10, 10], [30, 10], [30]]}, "not an [x, y] pair"),
    ({"points": [[10, 10], [30, 10], [30, 150]]}, "outside the image"),
    ({"points": [[10, 10], [30, 10], ["a", 5]]}, "numeric"),
])
def test_malformed_polygons_are_region_errors(value, message):
    with pytest.raises(RegionError, match=re.escape(message)):
        mask_from_region({"type": "polygonlabels", "value": value}, W, H)


def _box(x0, y0, x1, y1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_a_polygon_too_complex_to_rasterise_is_a_region_error():
    zigzag = [[x / 500, 0 if x % 2 else 100] for x in range(50_000)]  # 50000 edges, each across all 100 rows
    with pytest.raises(RegionError, match="too complex"):
        mask_from_region({"type": "polygonlabels", "value": {"points": zigzag}}, W, H)
