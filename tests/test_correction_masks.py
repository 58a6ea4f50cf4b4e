"""A correction click changes the extreme-point model's mask only the way the click says."""

import numpy as np
import pytest

from backend.correction_masks import AnsweredMask, corrected_mask, follow_correction
from backend.known_objects import Click


def square(x0, y0, x1, y1, shape=(40, 60)):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


PREVIOUS = square(10, 5, 30, 25)
ANSWER = square(25, 20, 45, 35)  # moved: part of the previous mask gone, a new part added


def test_a_positive_click_only_adds_and_a_negative_one_only_removes():
    assert (corrected_mask(PREVIOUS, ANSWER, True) == (PREVIOUS | ANSWER)).all()
    assert (corrected_mask(PREVIOUS, ANSWER, False) == (PREVIOUS & ANSWER)).all()


@pytest.mark.parametrize("mask", [PREVIOUS, np.zeros((40, 60), bool), np.ones((7, 9), bool),
                                  np.random.default_rng(0).random((33, 17)) > 0.5])
def test_an_answered_mask_packs_its_box_and_comes_back_the_same(mask):
    packed = AnsweredMask.of(mask, ["c1"])
    assert (packed.mask() == mask).all() and packed.click_ids == ("c1",)
    assert packed.nbytes <= (mask.size + 7) // 8


def clicks(*specs):
    return tuple(Click(region_id, (0.0, 0.0), positive) for region_id, positive in specs)


def test_one_new_click_after_the_answered_ones_is_merged_with_the_answered_mask():
    previous = AnsweredMask.of(PREVIOUS, ["c1"])
    assert (follow_correction(ANSWER, previous, clicks(("c1", True), ("c2", True))) == (PREVIOUS | ANSWER)).all()
    assert (follow_correction(ANSWER, previous, clicks(("c1", True), ("c2", False))) == (PREVIOUS & ANSWER)).all()


@pytest.mark.parametrize("previous, now", [
    (None, clicks(("c1", True))),  # nothing answered before (another process answered it)
    (AnsweredMask.of(PREVIOUS, []), clicks(("c1", True), ("c2", True))),  # two new clicks at once
    (AnsweredMask.of(PREVIOUS, ["c1"]), clicks(("c1", True))),  # the same clicks again (a policy changed)
    (AnsweredMask.of(PREVIOUS, ["c0"]), clicks(("c1", True), ("c2", True))),  # other clicks than answered
    (AnsweredMask.of(PREVIOUS, []), clicks((None, True))),  # a click without an id cannot be told apart
    (AnsweredMask.of(square(0, 0, 5, 5, (20, 20)), []), clicks(("c1", True))),  # another image size
])
def test_otherwise_the_answer_is_the_models_own(previous, now):
    assert follow_correction(ANSWER, previous, now) is ANSWER
