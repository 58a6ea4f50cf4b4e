"""The annotator's flows in Label Studio 1.23's real labeling page, in headless Chromium, against
the real backend: extreme points with Auto-Accept off and on, a smart rectangle, clicks refining
one SAM mask, and merging two overlapping objects of a label.

Each flow opens a fresh task (LS restores drafts of a task already visited), switches on
Auto-Annotation and "Keep label selected after creating a region", draws like an annotator,
submits, and checks the saved annotation through the REST API. The extreme-point model (the
committed default weights) must reach IoU >= 0.8 on held-out synthetic objects; SAM has random
weights here (tests/conftest.py), so SAM flows check structure only. Each flow saves a screenshot
to docs/screenshots/ (the annotator's guide shows them) and the time from its last click to the
mask on the canvas to bench/results/click_to_mask.json (``bench/click_to_mask.py`` prints it).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
from labeling_page import LabelingPage
from ls_project import Project, decoded_mask, iou, regions_by_id
from ls_server import PASSWORD, USERNAME
from scenes import SceneObject, overlapping_pair, synthetic_objects

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (REPO / "examples" / "labeling_config.xml").read_text()
SCREENSHOTS = REPO / "docs" / "screenshots"
TIMINGS = REPO / "bench" / "results" / "click_to_mask.json"
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
def timings() -> dict:
    figures: dict[str, float] = {}
    yield figures
    if figures:
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS.write_text(json.dumps({"machine": f"{platform.machine()}, {_cpus()} CPUs", "seconds": figures},
                                      indent=2) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


@pytest.fixture(scope="module")
def labeling(chromium, label_studio) -> LabelingPage:
    page = chromium.new_page()
    labeling = LabelingPage(page, label_studio.url, LABEL_CONFIG)
    labeling.login(USERNAME, PASSWORD)
    yield labeling
    page.close()


def open_fresh_task(labeling: LabelingPage, project: Project, image_url: str, auto_accept: bool) -> int:
    """A new task on the image, with the settings an annotator switches on for these tools."""
    task = project.new_task(image_url)
    labeling.open_task(project.id, task)
    labeling.set_auto_annotation(True)
    labeling.set_auto_accept(auto_accept)
    labeling.set_setting(KEEP_LABEL, True)
    return task


def record(timings: dict, flow: str, seconds: float) -> None:
    timings[flow] = round(seconds, 3)
    print(f"\n{flow}: {seconds * 1000:.0f} ms from the last click to the mask on the canvas")


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
                        pending_screenshot: Path | None = None) -> float:
    """Clicks the object's 4 extreme points; returns seconds from the 4th click to its mask.
    Checks that the clicked points stay on the page until the mask comes, and go with it."""
    for count, (x, y) in enumerate(obj.points[:3], start=1):
        labeling.answered(lambda: labeling.click(x, y))
        points = [r for r in labeling.regions() if r["type"] == "keypointregion"]
        assert len(points) == count, f"after click {count}: {len(points)} points on the page\n{labeling.exchange_log()}"
    if pending_screenshot:
        labeling.screenshot(pending_screenshot)
    seconds = labeling.timed_until_mask(lambda: labeling.click(*obj.points[3]))
    if not auto_accept:
        assert labeling.suggestion_count() == 1, labeling.exchange_log()
        labeling.accept_suggestions()
    on_page = labeling.regions()
    assert [r["type"] for r in on_page].count("keypointregion") == 0, f"points left after the mask: {on_page}"
    return seconds


@pytest.mark.parametrize("auto_accept", [False, True], ids=["auto_accept_off", "auto_accept_on"])
def test_extreme_points_give_one_mask_per_object(labeling, project, scene, timings, auto_accept):
    image_url, objects = scene
    open_fresh_task(labeling, project, image_url, auto_accept)
    mode = "on" if auto_accept else "off"
    labeled = list(zip(objects, ("Cat", "Person")))
    for index, (obj, label) in enumerate(labeled):
        labeling.choose("extreme_points", label)  # the second object follows at once, with another label
        pending = SCREENSHOTS / f"extreme_points_pending_auto_accept_{mode}.png" if index == 0 else None
        seconds = draw_extreme_points(labeling, obj, auto_accept, pending)
        record(timings, f"extreme_points_auto_accept_{mode}_{label}", seconds)
    labeling.screenshot(SCREENSHOTS / f"extreme_points_auto_accept_{mode}.png")
    masks = {label: mask for label, mask, _ in saved_masks(project.annotation(labeling.submit()))}
    assert sorted(masks) == ["Cat", "Person"]
    for obj, label in labeled:
        assert masks[label].shape == obj.mask.shape
        assert iou(masks[label], obj.mask) >= MIN_IOU, f"{label}: IoU {iou(masks[label], obj.mask):.3f} with the object"


def test_smart_rectangle_gives_one_mask(labeling, project, scene, timings):
    image_url, objects = scene
    obj = objects[0]
    open_fresh_task(labeling, project, image_url, auto_accept=True)
    labeling.choose("box", "Cat")
    seconds = labeling.timed_until_mask(lambda: labeling.drag(*obj.box))
    record(timings, "smart_rectangle", seconds)
    on_page = [r["type"] for r in labeling.regions()]
    assert on_page == ["brushregion"], f"expected the box replaced by one mask, the page has {on_page}"
    labeling.screenshot(SCREENSHOTS / "smart_rectangle.png")
    [(label, mask, _)] = saved_masks(project.annotation(labeling.submit()))
    assert label == "Cat" and mask.shape == obj.mask.shape  # SAM has random weights: no accuracy check


def test_clicks_and_an_alt_click_refine_one_sam_mask(labeling, project, scene, timings):
    image_url, objects = scene
    obj = objects[1]
    open_fresh_task(labeling, project, image_url, auto_accept=False)
    labeling.choose("clicks", "Person")
    ys, xs = np.nonzero(obj.mask)
    second = (xs[len(xs) // 3] + 0.5, ys[len(ys) // 3] + 0.5)
    background = obj.background_point
    labeling.answered(lambda: labeling.click(*obj.inside_point))
    assert labeling.suggestion_count() == 1, labeling.exchange_log()
    labeling.answered(lambda: labeling.click(*second))
    assert labeling.suggestion_count() == 1, "the second answer must replace the first, not add to it"
    seconds = labeling.timed_until_mask(lambda: labeling.click(*background, alt=True))
    record(timings, "clicks_with_negative", seconds)
    sent = labeling.exchanges[-1].sent["context"]["result"]
    assert [r.get("is_positive") for r in sent] == [True, True, False], sent
    assert labeling.suggestion_count() == 1, labeling.exchange_log()
    labeling.screenshot(SCREENSHOTS / "clicks_with_negative.png")
    labeling.accept_suggestions()
    [(label, mask, _)] = saved_masks(project.annotation(labeling.submit()))
    assert label == "Person" and mask.shape == obj.mask.shape  # SAM has random weights: no accuracy check


def test_merge_overlapping_ends_with_one_region(labeling, project, timings):
    image, (first, second) = overlapping_pair()
    image_url = project.upload("overlapping.png", image)
    open_fresh_task(labeling, project, image_url, auto_accept=True)
    labeling.choose("extreme_points", MERGING_LABEL)
    record(timings, "extreme_points_first_of_two", draw_extreme_points(labeling, first, auto_accept=True))
    [first_id] = [r["id"] for r in labeling.regions() if r["type"] == "brushregion"]
    labeling.wait_for_draft_with(first_id)  # the backend merges with what the page's draft holds
    record(timings, "extreme_points_merged", draw_extreme_points(labeling, second, auto_accept=True))
    on_page = [r for r in labeling.regions() if r["type"] == "brushregion"]
    assert [r["id"] for r in on_page] == [first_id], f"expected one merged region, the page has {on_page}"
    labeling.screenshot(SCREENSHOTS / "merge_overlapping.png")
    [(label, mask, region_id)] = saved_masks(project.annotation(labeling.submit()))
    assert (label, region_id) == (MERGING_LABEL, first_id)
    both = first.mask | second.mask
    assert iou(mask, both) >= MIN_IOU, f"merged mask: IoU {iou(mask, both):.3f} with the two objects"
