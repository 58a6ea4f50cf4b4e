"""Boundary F-score and the outside fraction on hand-made masks whose answers are known."""

import numpy as np
import pytest

from backend.evaluation.mask_metrics import boundary, boundary_f_score, outside_fraction


def rectangle(top, left, bottom, right, shape=(40, 50)):
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def test_boundary_is_the_outline_and_the_image_frame_is_none():
    mask = rectangle(5, 5, 15, 20)
    edge = boundary(mask)
    assert edge.sum() == 2 * 10 + 2 * 15 - 4 and not edge[6:14, 6:19].any()
    cut = rectangle(0, 0, 10, 10)  # touches the top and left of the frame
    assert not boundary(cut)[0, 1:9].any() and not boundary(cut)[1:9, 0].any()
    assert boundary(cut)[9, :10].all() and boundary(cut)[:10, 9].all()


def test_identical_masks_score_one_and_a_shift_within_tolerance_too():
    mask = rectangle(5, 5, 25, 30)
    assert boundary_f_score(mask, mask) == 1.0
    shifted = rectangle(7, 5, 27, 30)
    assert boundary_f_score(shifted, mask, tolerance_px=2) == 1.0
    assert boundary_f_score(shifted, mask, tolerance_px=1) < 0.5


def test_a_lost_thin_part_costs_boundary_far_more_than_iou():
    body = rectangle(10, 5, 30, 25, (40, 80))
    wire = rectangle(19, 25, 21, 75, (40, 80))  # a 2 px wide, 50 px long limb
    truth = body | wire
    iou = (body & truth).sum() / truth.sum()
    f_score = boundary_f_score(body, truth)
    assert iou >= 0.8 and f_score < 0.7


def test_empty_masks():
    empty = np.zeros((10, 10), bool)
    assert boundary_f_score(empty, empty) == 1.0
    assert boundary_f_score(rectangle(2, 2, 5, 5, (10, 10)), empty) == 0.0
    assert outside_fraction(empty, rectangle(2, 2, 5, 5, (10, 10))) == 0.0


def test_a_far_away_false_part_lowers_precision_only():
    truth = rectangle(5, 5, 15, 15)
    extra = rectangle(30, 35, 34, 45)
    score = boundary_f_score(truth | extra, truth)
    n_true, n_extra = boundary(truth).sum(), boundary(extra).sum()
    precision = n_true / (n_true + n_extra)
    assert score == pytest.approx(2 * precision / (precision + 1))


def test_outside_fraction_is_the_flooded_share_of_the_mask():
    truth = rectangle(0, 0, 10, 10)
    flooded = rectangle(0, 0, 10, 30)  # 100 px right, 200 px on the background
    assert outside_fraction(flooded, truth) == pytest.approx(2 / 3)
    assert outside_fraction(truth, flooded) == 0.0
