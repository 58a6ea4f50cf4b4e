"""Simulated correction clicks: largest error region, its sign, its most interior pixel, jitter."""

import numpy as np
import pytest

from backend.training.correction_clicks import Click, next_click


def square(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_no_click_when_the_prediction_is_right():
    truth = square((20, 20), 2, 2, 10, 10)
    assert next_click(truth.copy(), truth) is None


def test_a_missed_part_gets_a_positive_click_at_its_centre():
    truth = square((40, 40), 0, 0, 30, 30)
    predicted = square((40, 40), 0, 0, 30, 15)  # the lower half (rows 15..29) is missed
    click = next_click(predicted, truth)
    assert click.positive
    # Mid-height of the 30 x 15 missed band, at least 7 pixels from its ends (the frame counts as an end).
    assert 21 <= click.y <= 23 and 7 <= click.x <= 23


def test_a_spill_gets_a_negative_click():
    truth = square((40, 40), 5, 5, 15, 15)
    predicted = truth | square((40, 40), 20, 20, 36, 36)
    click = next_click(predicted, truth)
    assert click == Click(28.5, 28.5, False) or click == Click(27.5, 27.5, False)
    assert not truth[int(click.y), int(click.x)] and predicted[int(click.y), int(click.x)]


def test_the_largest_error_region_wins_over_a_deeper_smaller_one():
    truth = square((60, 60), 0, 0, 10, 10)  # a 10 x 10 missed square
    predicted = square((60, 60), 20, 0, 60, 3)  # a 40 x 3 spill: larger area, shallower
    click = next_click(predicted, truth)
    assert not click.positive and click.y == 1.5


def test_the_click_keeps_away_from_the_image_frame():
    truth = square((30, 30), 0, 0, 30, 30)
    predicted = np.zeros((30, 30), bool)
    click = next_click(predicted, truth)
    assert 13 <= click.x <= 16 and 13 <= click.y <= 16


def test_the_click_lands_in_the_region_not_in_a_hole_of_it():
    truth = square((40, 40), 0, 0, 40, 40) & ~square((40, 40), 10, 10, 30, 30)  # a ring
    click = next_click(np.zeros((40, 40), bool), truth)
    assert click.positive and truth[int(click.y), int(click.x)]


def test_jitter_moves_the_click_within_the_region_and_is_reproducible():
    truth = square((100, 100), 20, 20, 80, 80)
    predicted = np.zeros((100, 100), bool)
    plain = next_click(predicted, truth)
    jittered = [next_click(predicted, truth, np.random.default_rng(seed), jitter_px=3) for seed in range(30)]
    offsets = [np.hypot(c.x - plain.x, c.y - plain.y) for c in jittered]
    assert max(offsets) <= 3 + np.sqrt(2) and len({(c.x, c.y) for c in jittered}) > 5
    assert all(c.positive for c in jittered)
    assert next_click(predicted, truth, np.random.default_rng(4), 3) == jittered[4]


def test_jitter_never_leaves_a_thin_region():
    truth = square((30, 30), 0, 14, 30, 15)  # one pixel high
    for seed in range(20):
        click = next_click(np.zeros((30, 30), bool), truth, np.random.default_rng(seed), jitter_px=5)
        assert truth[int(click.y), int(click.x)]


def test_mismatched_masks_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        next_click(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
