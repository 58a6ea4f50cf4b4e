"""Percent <-> pixels, rectangle rotation, image_rotation, brush RLE and the region/entry JSON."""

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface

from backend.protocol import RegionError, box_px, mask_from_region, point_px, region_from_mask, task_entry

W, H = 200, 100
CONFIG = """<View><Image name="image" value="$image" rotateControl="true"/>
  <BrushLabels name="mask" toName="image"><Label value="Car"/></BrushLabels>
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
