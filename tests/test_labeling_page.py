"""Interactive answers shaped for Label Studio's labeling page (``backend.labeling_page``): pending
extreme points echoed, finished points removed or kept read-only, merged masks replacing the
region they absorbed. The page's side of it is tested in tests/browser."""

import numpy as np
import pytest

from backend.labeling import LabelingConfig
from backend.labeling_page import echo_region, finished_point_echoes, page_answer, without_kept_points
from backend.protocol import mask_from_region, region_from_mask
from backend.routing import prompts_from_regions
from segmentation_fakes import CONFIG, H, W, box_mask, extreme_points, keypoint, make_app, predict_body, \
    setup_body, task


def answer(app, context, extra_params=None, the_task=None) -> list[dict]:
    client = app.test_client()
    assert client.post("/setup", json=setup_body(extra_params)).status_code == 200
    response = client.post("/predict", json=predict_body([the_task or task()], context=context))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["results"][0]["result"]


def accepted(region: dict) -> dict:
    """The region as the page sends it after accepting our echo: no longer dynamic, so no is_positive."""
    return {key: value for key, value in region.items() if key != "is_positive"}


def brushes(result: list[dict]) -> list[dict]:
    return [r for r in result if r["type"] == "brushlabels"]


def echoes(result: list[dict]) -> list[dict]:
    return [r for r in result if r["type"] == "keypointlabels"]


# -- the pieces ----------------------------------------------------------------------------------

def test_an_echo_is_the_drawn_region_with_the_same_id_and_flags_only_when_asked():
    point = keypoint(40, 30, tool="extreme")
    plain = echo_region(point)
    assert plain["id"] == point["id"] and plain["value"] == point["value"]
    assert "dynamic" not in plain and "readonly" not in plain and "is_positive" not in plain
    assert echo_region(point, remove=True)["dynamic"] is True
    assert echo_region(point, read_only=True)["readonly"] is True


def test_finished_points_are_removed_when_echoed_before_or_all_kept_read_only():
    points = extreme_points(20, 10, 80, 60)
    echoed_before = [accepted(p) for p in points[:3]]
    group = echoed_before + points[3:]
    removed = finished_point_echoes(group, keep=False)
    assert [r["id"] for r in removed] == [r["id"] for r in echoed_before]
    assert all(r["dynamic"] is True for r in removed)
    kept = finished_point_echoes(group, keep=True)
    assert [r["id"] for r in kept] == [r["id"] for r in group] and all(r["readonly"] is True for r in kept)


def test_kept_points_are_not_prompts_again():
    kept = [dict(accepted(p), readonly=True) for p in extreme_points(20, 10, 80, 60)]
    new = extreme_points(120, 30, 180, 90)[:1]
    assert without_kept_points(kept + new) == new


def test_the_page_replaces_exactly_what_the_policy_absorbed():
    """A screen mask the policy did not absorb stays, even when the merged mask covers most of it;
    an absorbed one goes, to the part (region) of the merged mask that overlaps it."""
    from backend.policies import Applied
    from backend.prompts import Segmentation
    from backend.routing import Routed

    merged = Segmentation(mask=box_mask(50, 20, 160, 70), score=1.0, label="Car", model="m")
    left = ({"id": "a", "from_name": "mask"}, box_mask(100, 20, 160, 70))
    inside = ({"id": "b", "from_name": "mask"}, box_mask(60, 30, 70, 40))
    region = {"id": "new", "from_name": "mask", "type": "brushlabels"}
    answer = page_answer([region], [merged], [0], [Applied(merged, absorbed=(0,))], Routed(),
                         {"Car": [left, inside]}, keep_points=False)
    assert answer == [{**region, "id": "a"}]  # takes left's place; "b" was not absorbed: not deleted


def test_a_tool_label_copied_onto_an_accepted_mask_is_not_a_prompt():
    # Label Studio adds the selected label of each labels control to an accepted suggestion: a
    # keypointlabels result with the mask's id and RLE, but no x/y.
    config = LabelingConfig.parse(CONFIG)
    mask = region_from_mask(box_mask(20, 10, 80, 60), label="Car", from_name="mask", to_name="image", score=0.9)
    copied = dict(mask, from_name="extreme", type="keypointlabels",
                  value={"format": "rle", "rle": mask["value"]["rle"], "keypointlabels": ["Car"]})
    routed = prompts_from_regions([mask, copied], config, W, H)
    assert routed.prompts == [] and routed.errors == []


# -- through /predict ----------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_partial_extreme_group_is_answered_with_its_points(tmp_path, count):
    app, segmenters, _ = make_app(tmp_path)
    points = extreme_points(20, 10, 80, 60)[:count]
    result = answer(app, points)
    assert [r["id"] for r in result] == [p["id"] for p in points]
    assert all(r["type"] == "keypointlabels" and "dynamic" not in r for r in result)
    assert segmenters.extreme.prompts == []


def test_with_auto_accept_the_fourth_point_brings_the_mask_and_clears_the_earlier_points(tmp_path):
    app, _, _ = make_app(tmp_path)
    points = extreme_points(20, 10, 80, 60)
    result = answer(app, [accepted(p) for p in points[:3]] + points[3:])
    [brush] = brushes(result)
    assert np.array_equal(mask_from_region(brush, W, H), box_mask(20, 10, 80, 60))
    assert [(r["id"], r["dynamic"]) for r in echoes(result)] == [(p["id"], True) for p in points[:3]]


def test_without_auto_accept_the_fourth_point_brings_only_the_mask(tmp_path):
    app, _, _ = make_app(tmp_path)
    result = answer(app, extreme_points(20, 10, 80, 60))
    assert [r["type"] for r in result] == ["brushlabels"]


def test_a_second_object_starts_while_the_first_waits_for_accept(tmp_path):
    app, _, _ = make_app(tmp_path)
    first, second = extreme_points(20, 10, 80, 60), extreme_points(120, 30, 180, 90, label="Dog")
    result = answer(app, first + second[:1])
    assert len(brushes(result)) == 1 and [r["id"] for r in echoes(result)] == [second[0]["id"]]


def test_a_project_that_keeps_points_gets_them_read_only_and_they_never_prompt_again(tmp_path):
    app, segmenters, _ = make_app(tmp_path)
    keep = {"keep_extreme_points": True}
    first = extreme_points(20, 10, 80, 60)
    result = answer(app, first, keep)
    assert len(brushes(result)) == 1
    assert [(r["id"], r["readonly"]) for r in echoes(result)] == [(p["id"], True) for p in first]
    kept = [dict(accepted(p), readonly=True) for p in first]
    second = extreme_points(120, 30, 180, 90)
    result = answer(app, kept + second[:2], keep)
    assert brushes(result) == [] and [r["id"] for r in result] == [p["id"] for p in second[:2]]
    assert len(segmenters.extreme.prompts) == 1


def test_keep_extreme_points_must_be_a_bool(tmp_path):
    app, _, _ = make_app(tmp_path)
    response = app.test_client().post("/setup", json=setup_body({"keep_extreme_points": "yes"}))
    assert response.status_code == 422
    assert '"keep_extreme_points" must be true or false' in response.get_json()["error"]


def test_a_merged_mask_replaces_the_region_it_absorbed_and_removes_the_others(tmp_path):
    app, _, _ = make_app(tmp_path)
    left = region_from_mask(box_mask(10, 20, 60, 70), label="Car", from_name="mask", to_name="image", score=1)
    right = region_from_mask(box_mask(100, 20, 160, 70), label="Car", from_name="mask", to_name="image", score=1)
    apart = region_from_mask(box_mask(180, 80, 200, 100), label="Car", from_name="mask", to_name="image", score=1)
    draft = {"id": 5, "result": [left, right, apart], "updated_at": "2025-11-25T10:00:00Z"}
    merge = {"policies": {"Car": {"merge_overlapping": True}}}
    result = answer(app, extreme_points(40, 30, 120, 60), merge, task(drafts=[draft]))
    [merged] = [r for r in result if not r.get("dynamic")]
    assert merged["id"] == left["id"]
    union = box_mask(10, 20, 60, 70) | box_mask(40, 30, 120, 60) | box_mask(100, 20, 160, 70)
    assert np.array_equal(mask_from_region(merged, W, H), union)
    [removed] = [r for r in result if r.get("dynamic")]
    assert removed["id"] == right["id"] and removed["type"] == "brushlabels"
