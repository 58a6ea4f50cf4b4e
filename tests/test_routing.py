"""Regions -> prompts (boxes, clicks, extreme groups, batch sources) and the segmenter choice."""

from types import SimpleNamespace

import numpy as np
import pytest

from backend.labeling import LabelingConfig
from backend.prompts import Prompt, PromptKind
from backend.routing import RoutingError, choose_segmenter, has_prompt_regions, prompts_from_regions, \
    prompts_from_task

W, H = 200, 100
CONFIG = LabelingConfig.parse("""
<View><Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="Car"/><Label value="Dog"/></BrushLabels>
  <KeyPointLabels name="extreme" toName="image" smart="true"><Label value="Car"/><Label value="Dog"/></KeyPointLabels>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="Car"/><Label value="Dog"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Car"/><Label value="Dog"/></RectangleLabels>
</View>""")


def kp(x_px, y_px, label="Car", tool="click", positive=True, rotation=0):
    """A keypoint region as Label Studio sends it, at pixel (x_px, y_px) of the W x H image."""
    return {"id": f"k{x_px}-{y_px}", "from_name": tool, "to_name": "image", "type": "keypointlabels",
            "original_width": W, "original_height": H, "image_rotation": rotation, "is_positive": positive,
            "value": {"x": x_px / W * 100, "y": y_px / H * 100, "width": 0.5, "keypointlabels": [label]}}


def rect(x0, y0, x1, y1, label="Car", rid=None):
    return {"id": rid or f"r{x0}-{y0}", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": x0 / W * 100, "y": y0 / H * 100, "width": (x1 - x0) / W * 100,
                      "height": (y1 - y0) / H * 100, "rotation": 0, "rectanglelabels": [label]}}


def extreme_points(x0, y0, x1, y1, label="Car"):
    """Top, bottom, left, right extreme points of the box (x0, y0, x1, y1)."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return [kp(cx, y0, label, "extreme"), kp(cx, y1, label, "extreme"), kp(x0, cy, label, "extreme"),
            kp(x1, cy, label, "extreme")]


def test_rectangle_is_a_box_prompt_in_pixels():
    routed = prompts_from_regions([rect(20, 10, 120, 60)], CONFIG, W, H)
    [prompt] = routed.prompts
    assert prompt.kind is PromptKind.BOX and prompt.label == "Car"
    assert prompt.box == pytest.approx((20, 10, 120, 60))
    assert prompt.points.shape == (0, 2)


def test_clicks_of_the_same_label_inside_a_box_join_it():
    regions = [rect(20, 10, 120, 60), kp(50, 30), kp(60, 40, positive=False), kp(50, 30, label="Dog"), kp(180, 80)]
    routed = prompts_from_regions(regions, CONFIG, W, H)
    box, dog, car_points = routed.prompts
    assert box.kind is PromptKind.BOX
    assert box.points.tolist() == [[50, 30], [60, 40]] and box.point_labels.tolist() == [1, 0]
    assert (dog.kind, dog.label, dog.points.tolist()) == (PromptKind.POINTS, "Dog", [[50, 30]])
    assert (car_points.kind, car_points.points.tolist()) == (PromptKind.POINTS, [[180, 80]])


def test_a_click_inside_nested_boxes_joins_the_smallest():
    routed = prompts_from_regions([rect(0, 0, 200, 100), rect(40, 20, 80, 60), kp(50, 30)], CONFIG, W, H)
    big, small = routed.prompts
    assert big.points.shape == (0, 2) and small.points.tolist() == [[50, 30]]


def test_clicks_accumulate_into_one_points_prompt_per_label():
    routed = prompts_from_regions([kp(10, 10), kp(20, 20, positive=False), kp(30, 30)], CONFIG, W, H)
    [prompt] = routed.prompts
    assert prompt.points.tolist() == [[10, 10], [20, 20], [30, 30]]
    assert prompt.point_labels.tolist() == [1, 0, 1]


def test_only_negative_clicks_wait_for_a_positive_one():
    routed = prompts_from_regions([kp(10, 10, positive=False)], CONFIG, W, H)
    assert routed.prompts == [] and routed.errors == [] and "all negative" in routed.pending[0]


@pytest.mark.parametrize("count, objects, pending", [(1, 0, 1), (3, 0, 3), (4, 1, 0), (5, 1, 1), (8, 2, 0)])
def test_extreme_points_group_by_four(count, objects, pending):
    points = extreme_points(20, 10, 120, 60) + extreme_points(130, 20, 190, 90)
    routed = prompts_from_regions(points[:count], CONFIG, W, H)
    assert [p.kind for p in routed.prompts] == [PromptKind.EXTREME] * objects
    assert routed.errors == []
    assert bool(routed.pending) == bool(pending)
    if pending:
        assert f"{pending} of 4 extreme points" in routed.pending[0]
    if objects:
        assert routed.prompts[0].points.tolist() == [[70, 10], [70, 60], [20, 35], [120, 35]]
        assert routed.prompts[0].point_labels.tolist() == [1, 1, 1, 1]


def test_extreme_points_group_per_label_and_ignore_negative_points():
    regions = extreme_points(20, 10, 120, 60)[:2] + extreme_points(130, 20, 190, 90, "Dog") \
        + [kp(5, 5, tool="extreme", positive=False)] + extreme_points(20, 10, 120, 60)[2:]
    routed = prompts_from_regions(regions, CONFIG, W, H)
    assert [(p.kind, p.label) for p in routed.prompts] == [(PromptKind.EXTREME, "Car"), (PromptKind.EXTREME, "Dog")]
    assert routed.pending == []


def test_collinear_extreme_points_are_an_error():
    flat = [kp(10, 50, tool="extreme"), kp(20, 50, tool="extreme"), kp(30, 50, tool="extreme"),
            kp(40, 50, tool="extreme")]
    routed = prompts_from_regions(flat, CONFIG, W, H)
    assert routed.prompts == [] and "span no area" in routed.errors[0]


def test_unusable_regions_are_reported_and_the_rest_still_routed():
    outside = kp(10, 10)
    outside["value"]["x"] = 130.0
    regions = [rect(20, 10, 120, 60), kp(30, 30, label="Unicorn"), outside, rect(50, 50, 50, 90), kp(150, 20)]
    routed = prompts_from_regions(regions, CONFIG, W, H)
    assert [p.kind for p in routed.prompts] == [PromptKind.BOX, PromptKind.POINTS]
    assert len(routed.errors) == 3
    assert 'label "Unicorn"' in routed.errors[0]
    assert "outside the image" in routed.errors[1]
    assert "zero area" in routed.errors[2]


def test_other_regions_are_not_prompts_and_rotation_is_reported():
    brush = {"from_name": "mask", "type": "brushlabels", "value": {"format": "rle", "rle": [0], "brushlabels": ["Car"]}}
    routed = prompts_from_regions([brush, kp(10, 10, rotation=90)], CONFIG, W, H)
    assert len(routed.prompts) == 1 and routed.errors == [] and routed.image_rotation == 90


def test_task_prompts_come_from_predictions_and_kept_annotations_once():
    box = rect(20, 10, 120, 60)
    task = {
        "id": 1,
        "data": {"image": "x"},
        "predictions": [{"result": [box]}, 17],
        "annotations": [
            {"result": [dict(box, id="copied"), rect(130, 20, 190, 90, "Dog")], "was_cancelled": False},
            {"result": [rect(0, 0, 10, 10)], "was_cancelled": True},
        ],
    }
    routed = prompts_from_task(task, CONFIG, W, H)
    assert [(p.label, p.box) for p in routed.prompts] == [("Car", pytest.approx((20, 10, 120, 60))),
                                                          ("Dog", pytest.approx((130, 20, 190, 90)))]
    assert has_prompt_regions(task, CONFIG)
    assert not has_prompt_regions({"data": {}, "annotations": [{"result": [], "was_cancelled": False}]}, CONFIG)


def fakes(sam, extreme):
    return SimpleNamespace(sam="SAM" if sam else None, extreme="EXT" if extreme else None)


EXTREME = Prompt(PromptKind.EXTREME, "Car", points=np.zeros((4, 2)))
BOX = Prompt(PromptKind.BOX, "Car", box=(0, 0, 5, 5))
POINTS = Prompt(PromptKind.POINTS, "Car", points=np.zeros((1, 2)))


@pytest.mark.parametrize("prompt, sam, extreme, chosen, fallback", [
    (EXTREME, True, True, "EXT", False),
    (EXTREME, True, False, "SAM", True),
    (BOX, True, True, "SAM", False),
    (BOX, False, True, "EXT", True),
    (POINTS, True, True, "SAM", False),
])
def test_segmenter_choice(prompt, sam, extreme, chosen, fallback):
    segmenter, note = choose_segmenter(prompt, fakes(sam, extreme))
    assert segmenter == chosen
    assert bool(note) == fallback


@pytest.mark.parametrize("prompt, sam, extreme", [(POINTS, False, True), (BOX, False, False), (EXTREME, False, False)])
def test_no_segmenter_is_a_clear_error(prompt, sam, extreme):
    with pytest.raises(RoutingError, match="not loaded"):
        choose_segmenter(prompt, fakes(sam, extreme))
