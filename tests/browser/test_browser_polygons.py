"""A polygon project in Label Studio 1.23's real labeling page: four extreme points give a polygon
(``examples/labeling_config_polygons.xml``), which the annotator then edits like any polygon:
a click selects it, a vertex is dragged elsewhere. The saved annotation holds
the edited polygon. Same setup as test_browser_flows.py (fresh task, Auto-Annotation, "Keep
label selected after creating a region"), with Auto-Accept on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from labeling_page import LabelingPage
from ls_project import Project, iou
from outputs import SCREENSHOTS
from scenes import synthetic_objects
from scipy import ndimage
from test_browser_flows import MIN_IOU, PROMPT_TYPES, draw_extreme_points, open_fresh_task

from backend.polygons import polygon_mask

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
LABEL_CONFIG = (REPO / "examples" / "labeling_config_polygons.xml").read_text()
VERTEX_SHIFT_PX = 12  # how far the annotator drags a vertex


@pytest.fixture(scope="module")
def labeling(open_labeling_page) -> LabelingPage:
    return open_labeling_page(LABEL_CONFIG)


def pixels(region: dict) -> np.ndarray:
    """A polygon result's vertices (N, 2) in natural-image pixels."""
    return np.array(region["value"]["points"]) * (region["original_width"] / 100, region["original_height"] / 100)


def test_extreme_points_give_a_polygon_the_annotator_can_edit(labeling, label_studio, backend):
    project = Project.create(label_studio.api, "polygon project", LABEL_CONFIG, backend)
    image, objects = synthetic_objects()
    obj = objects[0]
    open_fresh_task(labeling, project, project.upload("synthetic.png", image), auto_accept=True)
    labeling.choose("extreme_points", "Cat")
    draw_extreme_points(labeling, obj, auto_accept=True)
    labeling.wait_for_counts(polygons=1, points=0)
    [answered] = [r for r in labeling.exchanges[-1].answer["data"]["result"] if r["type"] == "polygonlabels"]
    before = pixels(answered)
    height, width = obj.mask.shape
    outline = ndimage.binary_fill_holes(obj.mask)  # a polygon covers the object's holes
    assert iou(polygon_mask(before, width, height), outline) >= MIN_IOU
    labeling.screenshot(SCREENSHOTS / "extreme_points_polygon.png")

    # The annotator edits it: a click selects the polygon (and shows its vertices), then a vertex is
    # dragged elsewhere. (The Move tool, V, would drag or scale the whole polygon instead.)
    labeling.click(*obj.inside_point)
    labeling.page.wait_for_function("() => window.Htx.annotationStore.selected.regions.some((r) => r.selected)")
    index = int(np.argmin(before[:, 0]))  # the left-most vertex, dragged further left
    moved = before[index] - (VERTEX_SHIFT_PX, 0)
    labeling.drag(*before[index], *moved)
    result = project.annotation(labeling.submit())

    assert [r for r in result if r["type"] in PROMPT_TYPES and "x" in r["value"]] == []
    [saved] = [r for r in result if r["type"] == "polygonlabels"]
    assert saved["value"]["polygonlabels"] == ["Cat"] and saved["from_name"] == "outline"
    after = pixels(saved)
    assert len(after) == len(before)
    shifted = np.linalg.norm(after - before, axis=1)
    assert np.count_nonzero(shifted > 0.5) == 1, f"one vertex should have moved: {shifted.round(1).tolist()}"
    assert np.allclose(after[index], moved, atol=1.5), (after[index], moved)
