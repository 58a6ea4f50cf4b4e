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


def clicked(prompt, *clicks):
    """``prompt`` with correction clicks (x, y, positive) after its points."""
    points = np.concatenate([prompt.points.reshape(-1, 2), [[x, y] for x, y, _ in clicks]]).astype(np.float32)
    labels = np.concatenate([prompt.point_labels, [int(positive) for _, _, positive in clicks]]).astype(np.int64)
    return Prompt(prompt.kind, prompt.label, box=prompt.box, points=points, point_labels=labels)


def test_a_negative_click_removes_a_look_alike_inside_the_box():
    image, mask = scene()
    pixels = image.array.copy()
    pixels[61:66, 60:65] = pixels[40, 60]  # a 5x5 patch of the object's red inside the box, not the object
    image = LoadedImage(array=pixels, key="look-alike")
    box = box_prompt((34.0, 25.0, 96.0, 66.0))
    before = GrabCutSegmenter().segment(image, box).mask
    assert before[61:66, 60:65].all()  # GrabCut alone takes it for the object
    after = GrabCutSegmenter().segment(image, clicked(box, (62.5, 63.5, False))).mask
    assert not after[61:66, 60:65].any() and iou(after, mask) > iou(before, mask)


def test_a_positive_click_keeps_a_part_that_looks_like_the_background():
    image, mask = scene()
    pixels = image.array.copy()
    pixels[38:52, 82:90] = image.array[38:52, 100:108]  # the object's right end has the background's texture
    image = LoadedImage(array=pixels, key="background-like end")
    points = np.array([[40.5, 45.0], [89.5, 45.0], [65.0, 30.5], [65.0, 59.5]], np.float32)
    extreme = Prompt(PromptKind.EXTREME, "thing", points=points, point_labels=np.ones(4, np.int64))
    before = GrabCutSegmenter().segment(image, extreme).mask
    assert not before[38:52, 82:90].any()  # GrabCut alone cuts it off
    after = GrabCutSegmenter().segment(image, clicked(extreme, (86.5, 45.5, True))).mask
    assert after[42:49, 83:90].mean() > 0.8 and iou(after, mask) > iou(before, mask) + 0.05


def test_a_later_click_wins_where_discs_overlap_and_outside_clicks_count():
    image, mask = scene()
    box = box_prompt((40.0, 30.0, 90.0, 60.0))
    answer = GrabCutSegmenter().segment(image, clicked(box, (60.5, 40.5, False), (61.5, 40.5, True), (10.5, 80.5, True)))
    assert answer.mask[40, 61] and answer.mask[80, 10]  # the positive click after the negative; one outside the box
    assert not GrabCutSegmenter().segment(image, clicked(box, (61.5, 40.5, True), (60.5, 40.5, False))).mask[40, 60]


def test_clicks_must_have_labels_and_extreme_points_come_first():
    image, _ = scene()
    box = box_prompt((34.0, 25.0, 96.0, 66.0))
    unlabeled = Prompt(PromptKind.BOX, "thing", box=box.box, points=np.array([[50.0, 40.0]], np.float32))
    with pytest.raises(ValueError, match="1 points but 0 point labels"):
        GrabCutSegmenter().segment(image, unlabeled)
    three = Prompt(PromptKind.EXTREME, "thing", points=np.zeros((3, 2), np.float32), point_labels=np.ones(3, np.int64))
    with pytest.raises(ValueError, match="needs 4 points, got 3"):
        GrabCutSegmenter().segment(image, three)
