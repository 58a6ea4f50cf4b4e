"""The annotator's flows in Label Studio 1.23's real labeling page, in headless Chromium, against
the real backend: extreme points with Auto-Accept off and on, a smart rectangle, clicks refining
one SAM mask, merging two overlapping objects of a label, and a project that keeps its points.

Each flow opens a fresh task (LS restores drafts of a task already visited), switches on
Auto-Annotation and "Keep label selected after creating a region", draws like an annotator,
submits, and checks the saved annotation through the REST API. The extreme-point model (the
committed default weights) must reach IoU >= 0.8 on held-out synthetic objects; SAM has random
weights here (tests/conftest.py), so SAM flows check structure only. Each flow saves a screenshot
and the time from its last click to the mask on the canvas (where: ``outputs``; untracked unless
``bench/click_to_mask.py --run`` refreshes the committed ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from labeling_page import LabelingPage
from ls_project import Project, decoded_mask, iou, regions_by_id
from outputs import SCREENSHOTS
from scenes import SceneObject, overlapping_pair, synthetic_objects

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (REPO / "examples" / "labeling_config_sam.xml").read_text()
KEEP_LABEL = "Keep label selected after creating a region"
MERGING_LABEL = "Car"  # the project merges overlapping "Car" masks
MIN_IOU = 0.8
PROMPT_TYPES = ("keypointlabels", "rectanglelabels")


@pytest.fixture(scope="module")
def project(label_studio, backend) -> Project:
    return Project.create(label_studio.api, "browser flows", LABEL_CONFIG, backend,
                          extra_params={"policies": {MERGING_LABEL: {"merge_overlapping": True}}})


@pytest.fixture(scope="module")
def scene(project):
    image, objects = synthetic_objects()
    return project.upload("synthetic.png", image), objects


@pytest.fixture(scope="module")
def labeling(open_labeling_page) -> LabelingPage:
    return open_labeling_page(LABEL_CONFIG)


def open_fresh_task(labeling: LabelingPage, project: Project, image_url: str, auto_accept: bool) -> int:
    """A new task on the image, with the settings an annotator switches on for these tools."""
    task = project.new_task(image_url)
    labeling.open_task(project.id, task)
    labeling.set_auto_annotation(True)
    labeling.set_auto_accept(auto_accept)
    labeling.set_setting(KEEP_LABEL, True)
    assert labeling.off_screen() == [], "the annotator would scroll to reach these"
    return task


def guide_screenshots(labeling: LabelingPage) -> None:
    """The settings dialog and the opened smart-tool group, for the annotator's guide."""
    labeling.open_settings()
    labeling.screenshot(SCREENSHOTS / "settings.png", ".ant-modal-content")
    labeling.close_settings()
    labeling.hover_smart_tools()
    labeling.screenshot(SCREENSHOTS / "smart_tools.png")
    labeling.page.mouse.move(0, 0)


def saved_masks(result: list[dict]) -> list[tuple[str, np.ndarray, str]]:
    """(label, mask, region id) of each brush region of a saved annotation, checking that nothing
    else is in it: no prompt points or boxes left, and per region one brush result (Label Studio
    may add the selected tool label to an accepted mask as a second result without coordinates)."""
    leftovers = [r for r in result if r["type"] in PROMPT_TYPES and "x" in r["value"]]
    assert leftovers == [], f"prompt regions left in the annotation: {leftovers}"
    masks = []
    for region_id, results in regions_by_id(result).items():
        brushes = [r for r in results if r["type"] == "brushlabels"]
        assert len(brushes) == 1, f"region {region_id} has {len(brushes)} brush results: {results}"
        masks.append((brushes[0]["value"]["brushlabels"][0], decoded_mask(brushes[0]), region_id))
    return masks


def draw_extreme_points(labeling: LabelingPage, obj: SceneObject, auto_accept: bool,
                        pending_screenshot: Path | None = None, modifier: str | None = None, first: int = 0) -> float:
    """Clicks the object's 4 extreme points (holding ``modifier``), beginning with point ``first``
    (left, right, top, bottom); returns seconds from the 4th click to its mask. Checks that the
    points stay on the page until the mask comes, and go with it."""
    points = np.roll(obj.points, -first, axis=0)
    for count, (x, y) in enumerate(points[:3], start=1):
        labeling.answered(lambda: labeling.click(x, y, modifier))
        # The answer is the points themselves: accepted at once, or offered as suggestions.
        labeling.wait_for_counts(points=count, suggestions=0 if auto_accept else count)
    if pending_screenshot:
        labeling.screenshot(pending_screenshot)
    seconds = labeling.timed_until_mask(lambda: labeling.click(*points[3], modifier))
    if not auto_accept:
        labeling.wait_for_counts(suggestions=1)  # the mask alone: the points were never accepted
        labeling.accept_suggestions()
    labeling.wait_for_counts(points=0, suggestions=0)
    return seconds


@pytest.mark.parametrize("auto_accept", [False, True], ids=["auto_accept_off", "auto_accept_on"])
def test_extreme_points_give_one_mask_per_object(labeling, project, scene, click_to_mask, auto_accept):
    image_url, objects = scene
    open_fresh_task(labeling, project, image_url, auto_accept)
    if not auto_accept:
        guide_screenshots(labeling)
    mode = "on" if auto_accept else "off"
    labeled = list(zip(objects, ("Cat", "Person")))
    for index, (obj, label) in enumerate(labeled):
        labeling.choose("extreme_points", label)  # the second object follows at once, with another label
        pending = SCREENSHOTS / "extreme_points_pending.png" if auto_accept and index == 0 else None
        seconds = draw_extreme_points(labeling, obj, auto_accept, pending)
        click_to_mask[f"extreme_points_auto_accept_{mode}_{label}"] = seconds
    labeling.screenshot(SCREENSHOTS / f"extreme_points_auto_accept_{mode}.png")
    masks = {label: mask for label, mask, _ in saved_masks(project.annotation(labeling.submit()))}
    assert sorted(masks) == ["Cat", "Person"]
    for obj, label in labeled:
        assert masks[label].shape == obj.mask.shape
        assert iou(masks[label], obj.mask) >= MIN_IOU, f"{label}: IoU {iou(masks[label], obj.mask):.3f} with the object"


def test_smart_rectangle_gives_one_mask(labeling, project, scene, click_to_mask):
    image_url, objects = scene
    obj = objects[0]
    open_fresh_task(labeling, project, image_url, auto_accept=True)
    labeling.choose("box", "Cat")
    seconds = labeling.timed_until_mask(lambda: labeling.drag(*obj.box))
    click_to_mask["smart_rectangle"] = seconds
    assert [r["type"] for r in labeling.regions()] == ["brushregion"], "the box must be replaced by one mask"
    labeling.screenshot(SCREENSHOTS / "smart_rectangle.png")
    [(label, mask, _)] = saved_masks(project.annotation(labeling.submit()))
    assert label == "Cat" and mask.shape == obj.mask.shape  # SAM has random weights: no accuracy check


def test_clicks_and_an_alt_click_refine_one_sam_mask(labeling, project, scene, click_to_mask):
    image_url, objects = scene
    obj = objects[1]
    open_fresh_task(labeling, project, image_url, auto_accept=False)
    labeling.choose("clicks", "Person")
    ys, xs = np.nonzero(obj.mask)
    second = (xs[len(xs) // 3] + 0.5, ys[len(ys) // 3] + 0.5)
    background = obj.background_point
    labeling.answered(lambda: labeling.click(*obj.inside_point))
    labeling.wait_for_counts(points=1, suggestions=1)
    labeling.answered(lambda: labeling.click(*second))
    labeling.wait_for_counts(points=2, suggestions=1)  # the second answer replaces the first
    seconds = labeling.timed_until_mask(lambda: labeling.click(*background, modifier="Alt"))
    click_to_mask["clicks_with_negative"] = seconds
    sent = labeling.exchanges[-1].sent["context"]["result"]
    assert [r.get("is_positive") for r in sent] == [True, True, False], sent
    labeling.wait_for_counts(points=3, suggestions=1)
    labeling.screenshot(SCREENSHOTS / "clicks_with_negative.png")
    labeling.accept_suggestions()
    [(label, mask, _)] = saved_masks(project.annotation(labeling.submit()))
    assert label == "Person" and mask.shape == obj.mask.shape  # SAM has random weights: no accuracy check


def test_merge_overlapping_ends_with_one_region(labeling, project, click_to_mask):
    image, (first, second) = overlapping_pair()
    image_url = project.upload("overlapping.png", image)
    open_fresh_task(labeling, project, image_url, auto_accept=True)
    labeling.choose("extreme_points", MERGING_LABEL)
    click_to_mask["extreme_points_first_of_two"] = draw_extreme_points(labeling, first, auto_accept=True)
    [first_id] = [r["id"] for r in labeling.regions() if r["type"] == "brushregion"]
    labeling.wait_for_draft_with(first_id)  # the backend merges with what the page's draft holds
    # Some of the second object's points lie on the first mask, where a plain click selects the mask;
    # it begins at its right-most point, outside the first object's box (a point inside would correct it).
    seconds = draw_extreme_points(labeling, second, auto_accept=True, modifier="Control", first=1)
    click_to_mask["extreme_points_merged"] = seconds
    labeling.wait_for_counts(masks=1)
    assert [r["id"] for r in labeling.regions()] == [first_id], "the merged mask must replace the first"
    labeling.screenshot(SCREENSHOTS / "merge_overlapping.png")
    [(label, mask, region_id)] = saved_masks(project.annotation(labeling.submit()))
    assert (label, region_id) == (MERGING_LABEL, first_id)
    both = first.mask | second.mask
    assert iou(mask, both) >= MIN_IOU, f"merged mask: IoU {iou(mask, both):.3f} with the two objects"


def test_a_project_can_keep_the_extreme_points(labeling, label_studio, backend):
    keeping = Project.create(label_studio.api, "keeps extreme points", LABEL_CONFIG, backend,
                             extra_params={"keep_extreme_points": True})
    image, objects = synthetic_objects()
    open_fresh_task(labeling, keeping, keeping.upload("synthetic.png", image), auto_accept=True)
    labeling.choose("extreme_points", "Cat")
    for x, y in objects[0].points:
        labeling.answered(lambda: labeling.click(x, y))
    labeling.wait_for_counts(points=4, masks=1)
    assert all(r["readonly"] for r in labeling.regions() if r["type"] == "keypointregion")
    next_object = labeling.answered(lambda: labeling.click(*objects[1].points[0]))  # same label: kept points skipped
    assert [r["type"] for r in next_object.answer["data"]["result"]] == ["keypointlabels"], labeling.exchange_log()
    labeling.wait_for_counts(points=5, masks=1)
    result = keeping.annotation(labeling.submit())
    kept = [r for r in result if r["type"] == "keypointlabels" and r.get("readonly")]
    assert len(kept) == 4 and all("x" in r["value"] for r in kept)
    assert len([r for r in result if r["type"] == "brushlabels"]) == 1
