"""Correction clicks in Label Studio 1.23's real labeling page (headless Chromium, the real backend):
four extreme points give a mask, then one negative (Alt+click) and one positive click of the same
label fix it, and the annotation ends with one region, the same one, refined. With Auto-Accept on
the page deletes the points when it accepts the mask, so the clicks arrive alone (the backend
remembers the object); with it off they are corrected before ✓, the points still on screen.

The clicks go where the first mask is wrong (its largest spill and its largest miss, as the click
protocol of ``backend.training.correction_clicks`` picks them, kept inside the object's box so that
they are corrections, not a new object); where the first mask has no error of a kind, in the
middle of the object's background inside its box (negative) or of the object (positive). Ctrl places a
point on top of a mask. How much the clicks improve the mask is the model's measure (``bench/``);
here the refined mask must not be worse than the first. Screenshots for the annotator's guide
(section 5).
"""

from __future__ import annotations

import numpy as np
import pytest
from labeling_page import LabelingPage
from ls_project import Project, decoded_mask, iou
from outputs import SCREENSHOTS
from scenes import SceneObject, synthetic_objects
from test_browser_flows import LABEL_CONFIG, MIN_IOU, open_fresh_task, saved_masks

from backend.training.correction_clicks import next_click

pytestmark = [pytest.mark.integration, pytest.mark.browser]

LABEL = "Cat"


@pytest.fixture(scope="module")
def project(label_studio, backend) -> Project:
    return Project.create(label_studio.api, "correction clicks", LABEL_CONFIG, backend)


@pytest.fixture(scope="module")
def scene(project):
    image, objects = synthetic_objects()
    return project.upload("synthetic.png", image), objects[0]


@pytest.fixture(scope="module")
def labeling(open_labeling_page) -> LabelingPage:
    return open_labeling_page(LABEL_CONFIG)


def inner_box(obj: SceneObject) -> np.ndarray:
    """The pixels well inside the object's box (``backend.routing``: nearer an edge starts an object)."""
    x0, y0, x1, y1 = obj.box
    mx, my = max(3, 0.05 * (x1 - x0)), max(3, 0.05 * (y1 - y0))
    inside = np.zeros_like(obj.mask)
    inside[int(np.ceil(y0 + my)):int(y1 - my), int(np.ceil(x0 + mx)):int(x1 - mx)] = True
    return inside


def correction_points(first: np.ndarray, obj: SceneObject) -> tuple[tuple[float, float], tuple[float, float]]:
    """(negative, positive) click positions for the first mask ``first`` of ``obj``, inside its box."""
    inside, nothing = inner_box(obj), np.zeros_like(obj.mask)
    # The largest spill (the truth: what the mask got right) and the largest miss, else the middle of
    # the largest background part and of the largest object part inside the box.
    negative = next_click(first & inside, first & inside & obj.mask) or next_click(inside & ~obj.mask, nothing)
    positive = next_click(first & obj.mask & inside, obj.mask & inside) or next_click(nothing, inside & obj.mask)
    assert not negative.positive and positive.positive
    return (negative.x, negative.y), (positive.x, positive.y)


def answered_mask(labeling: LabelingPage) -> tuple[str, np.ndarray]:
    """(region id, mask) of the brush region in the last answer."""
    [brush] = [r for r in labeling.exchanges[-1].answer["data"]["result"] if r["type"] == "brushlabels"]
    return brush["id"], decoded_mask(brush)


@pytest.mark.parametrize("auto_accept", [False, True], ids=["auto_accept_off", "auto_accept_on"])
def test_a_negative_and_a_positive_click_refine_the_one_region(labeling, project, scene, auto_accept):
    image_url, obj = scene
    open_fresh_task(labeling, project, image_url, auto_accept)
    labeling.choose("extreme_points", LABEL)
    for count, (x, y) in enumerate(obj.points[:3], start=1):
        labeling.answered(lambda: labeling.click(x, y))
        labeling.wait_for_counts(points=count, suggestions=0 if auto_accept else count)
    labeling.answered(lambda: labeling.click(*obj.points[3]))
    mask_id, first = answered_mask(labeling)
    if auto_accept:
        labeling.wait_for_counts(points=0, masks=1, suggestions=0)
    else:
        labeling.wait_for_counts(points=4, masks=0, suggestions=1)
    negative, positive = correction_points(first, obj)

    # Ctrl: the click may land on the mask, where a plain click would select it.
    labeling.answered(lambda: labeling.click(*negative, modifier="Alt+Control"))
    assert answered_mask(labeling)[0] == mask_id, labeling.exchange_log()
    labeling.answered(lambda: labeling.click(*positive, modifier="Control"))
    refined_id, refined = answered_mask(labeling)
    sent = [(r["from_name"], r.get("is_positive")) for r in labeling.exchanges[-1].sent["context"]["result"]]
    if auto_accept:  # the page deleted the points and the first click: the click comes alone
        assert sent == [("extreme_points", True)], sent
        labeling.wait_for_counts(points=0, masks=1, suggestions=0)
        labeling.screenshot(SCREENSHOTS / "correction_refined.png")
    else:  # the points and both clicks still on screen, one suggestion: the refined mask
        assert sent == [("extreme_points", True)] * 4 + [("extreme_points", False), ("extreme_points", True)], sent
        labeling.wait_for_counts(points=6, masks=0, suggestions=1)
        labeling.screenshot(SCREENSHOTS / "correction_suggestion.png")
        labeling.accept_suggestions()
        labeling.wait_for_counts(points=0, masks=1, suggestions=0)
    assert refined_id == mask_id
    assert [r["id"] for r in labeling.regions() if r["type"] == "brushregion"] == [mask_id]

    [(label, saved, region_id)] = saved_masks(project.annotation(labeling.submit()))
    assert (label, region_id) == (LABEL, mask_id)
    assert np.array_equal(saved, refined)
    assert iou(saved, obj.mask) >= max(MIN_IOU, iou(first, obj.mask) - 0.02), \
        f"IoU {iou(first, obj.mask):.3f} before the clicks, {iou(saved, obj.mask):.3f} after"
