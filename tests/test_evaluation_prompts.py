"""Prompts the harness derives from ground-truth masks: tight box, loose box, extreme points."""

import numpy as np
import pytest

from backend.coco import EvalObject
from backend.evaluation.harness import loose_box, object_prompts
from backend.prompts import PromptKind


def rectangle_object(annotation_id=1, height=20, width=30, rows=(4, 9), cols=(5, 15)):
    mask = np.zeros((height, width), bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return EvalObject(annotation_id=annotation_id, category="thing", mask=mask)


def test_loose_box_is_20_percent_longer_per_side_around_the_same_centre():
    assert loose_box((10.0, 20.0, 30.0, 60.0), (100, 100)) == pytest.approx((8.0, 16.0, 32.0, 64.0))


def test_loose_box_is_clipped_to_the_image():
    assert loose_box((0.0, 5.0, 50.0, 40.0), (52, 41)) == pytest.approx((0.0, 1.5, 52.0, 41.0))


def test_object_prompts_of_a_rectangle():
    prompts = object_prompts(rectangle_object())
    assert prompts.tight_box.kind is PromptKind.BOX and prompts.tight_box.box == (5.0, 4.0, 15.0, 9.0)
    assert prompts.loose_box.box == pytest.approx((4.0, 3.5, 16.0, 9.5))
    extreme = prompts.extreme
    assert extreme.kind is PromptKind.EXTREME and extreme.label == "thing"
    np.testing.assert_array_equal(extreme.point_labels, [1, 1, 1, 1])
    # pixel centres in the middle of each flat side: columns 5..14, rows 4..8
    expected = {(5.5, 6.5), (14.5, 6.5), (10.5, 4.5), (10.5, 8.5)}
    assert {tuple(point) for point in extreme.points.tolist()} == expected


def test_jittered_points_depend_on_seed_and_annotation_only():
    obj = rectangle_object(annotation_id=7, rows=(0, 20), cols=(0, 30))  # fills the frame
    first = object_prompts(obj, jitter=0.1, seed=3).extreme.points
    np.testing.assert_array_equal(first, object_prompts(obj, jitter=0.1, seed=3).extreme.points)
    assert not np.array_equal(first, object_prompts(obj, jitter=0.1, seed=4).extreme.points)
    other = rectangle_object(annotation_id=8, rows=(0, 20), cols=(0, 30))
    assert not np.array_equal(first, object_prompts(other, jitter=0.1, seed=3).extreme.points)
    assert (first >= 0).all() and (first[:, 0] <= 30).all() and (first[:, 1] <= 20).all()
