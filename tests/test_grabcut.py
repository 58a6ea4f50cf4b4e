"""GrabCut baseline from a box."""

import numpy as np
import pytest

from backend.segmenters.grabcut import GrabCutSegmenter
from backend.training.validation import iou
from backend.prompts import LoadedImage, Prompt, PromptKind


def scene(height=90, width=120, rows=(30, 60), cols=(40, 90), seed=0):
    """A red rectangle on a grey-green noisy background, and its mask."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(60, 140, size=(height, width, 3), dtype=np.uint8)
    pixels[..., 0] //= 2
    mask = np.zeros((height, width), bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    pixels[mask] = rng.integers(200, 240, size=(mask.sum(), 3), dtype=np.uint8) * np.array([1, 0.2, 0.2])
    return LoadedImage(array=pixels, key="scene"), mask


def box_prompt(box):
    return Prompt(PromptKind.BOX, "thing", box=box)


def test_grabcut_finds_a_high_contrast_rectangle_inside_a_loose_box():
    image, mask = scene()
    answer = GrabCutSegmenter().segment(image, box_prompt((34.0, 25.0, 96.0, 66.0)))
    assert answer.mask.shape == mask.shape and answer.mask.dtype == bool
    assert iou(answer.mask, mask) > 0.9
    assert answer.label == "thing" and answer.model == "grabcut"


def test_grabcut_is_deterministic():
    image, _ = scene(seed=1)
    segmenter = GrabCutSegmenter(seed=7)
    first = segmenter.segment(image, box_prompt((34.0, 25.0, 96.0, 66.0))).mask
    np.testing.assert_array_equal(first, segmenter.segment(image, box_prompt((34.0, 25.0, 96.0, 66.0))).mask)


def test_box_covering_the_whole_image_returns_the_box():
    image, _ = scene()
    answer = GrabCutSegmenter().segment(image, box_prompt((0.0, 0.0, 120.0, 90.0)))
    assert answer.mask.all()


def test_one_pixel_thin_box_returns_its_pixels():
    image, _ = scene()
    answer = GrabCutSegmenter().segment(image, box_prompt((10.2, 5.0, 11.0, 30.0)))
    assert answer.mask.sum() == 25 and answer.mask[5:30, 10].all()


def test_box_outside_the_image_is_clipped():
    image, mask = scene(rows=(50, 90), cols=(70, 120))  # object in the bottom-right corner
    answer = GrabCutSegmenter().segment(image, box_prompt((60.0, 40.0, 140.0, 110.0)))
    assert iou(answer.mask, mask) > 0.9


def test_grabcut_needs_a_box():
    image, _ = scene()
    with pytest.raises(ValueError, match="box or extreme points"):
        GrabCutSegmenter().segment(image, Prompt(PromptKind.POINTS, "thing"))


def test_extreme_points_start_grabcut_from_the_box_they_span():
    image, mask = scene()
    points = np.array([[40.5, 45.0], [89.5, 45.0], [65.0, 30.5], [65.0, 59.5]], np.float32)  # pixel centres
    prompt = Prompt(PromptKind.EXTREME, "thing", points=points, point_labels=np.ones(4, np.int64))
    assert iou(GrabCutSegmenter().segment(image, prompt).mask, mask) > 0.9
