"""Correction clicks in the interactive flow: which clicks correct which object (``backend.routing``
with ``backend.known_objects``), and what the page gets back (the same region refined, clicks
cleared on accept). The page's side is tested in tests/browser/test_browser_corrections.py."""

from dataclasses import replace

import numpy as np
import pytest

from backend.correction_masks import AnsweredMask
from backend.known_objects import Click, KnownObject, RecentObjects
from backend.labeling import LabelingConfig
from backend.prompts import PromptKind, Segmentation
from backend.protocol import mask_from_region, region_from_mask
from backend.routing import prompts_from_regions, prompts_from_task
from backend.segmenter_set import SegmenterSet
from segmentation_fakes import CONFIG, H, W, BoxSegmenter, box_mask, extreme_points, keypoint, make_app, \
    predict_body, rectangle, setup_body, task

LABELING = LabelingConfig.parse(CONFIG)
CAR = (20, 10, 80, 60)  # the extreme points' box of the first object


def route(regions, known=()):
    return prompts_from_regions(regions, LABELING, W, H, known)


def accepted(region: dict) -> dict:
    """The region as the page sends it once our echo was accepted: no longer dynamic, no is_positive."""
    return {key: value for key, value in region.items() if key != "is_positive"}


def labels_of(prompt) -> list[int]:
    return prompt.point_labels.tolist()


# -- which clicks correct which object (routing) --------------------------------------------------

def test_a_point_inside_the_latest_box_corrects_it_and_one_outside_starts_a_new_group():
    routed = route(extreme_points(*CAR) + [keypoint(50, 35, tool="extreme"), keypoint(150, 50, tool="extreme")])
    [prompt] = routed.prompts
    assert prompt.kind is PromptKind.EXTREME and labels_of(prompt) == [1, 1, 1, 1, 1]
    assert prompt.points[4].tolist() == [50, 35]
    assert routed.pending == ['"extreme" "Car": 1 of 4 extreme points']
    assert [r["id"] for r in routed.pending_regions] == ["kp150_50"]


def test_a_negative_extreme_point_is_a_correction_and_without_an_object_it_is_ignored():
    negative = keypoint(50, 35, tool="extreme", positive=False)
    [prompt] = route(extreme_points(*CAR) + [negative]).prompts
    assert labels_of(prompt) == [1, 1, 1, 1, 0]
    alone = route([negative])
    assert alone.prompts == [] and alone.pending == [] and alone.errors == []


def test_a_point_on_the_edge_of_the_latest_box_starts_a_group():
    """Extreme points lie on their box's edges: the same object drawn again, or the next one."""
    routed = route(extreme_points(*CAR) + [keypoint(50, 11, tool="extreme")])
    assert labels_of(routed.prompts[0]) == [1, 1, 1, 1] and len(routed.pending_regions) == 1


def test_click_tool_clicks_inside_an_extreme_box_refine_that_object():
    regions = extreme_points(*CAR) + [keypoint(40, 30), keypoint(60, 40, positive=False), keypoint(150, 50)]
    extreme, free = route(regions).prompts
    assert extreme.kind is PromptKind.EXTREME and labels_of(extreme) == [1, 1, 1, 1, 1, 0]
    assert free.kind is PromptKind.POINTS and free.points.tolist() == [[150, 50]]


def test_two_objects_of_one_label_the_extreme_tool_corrects_the_latest_a_click_the_smallest_around_it():
    big, small = extreme_points(10, 10, 110, 90), extreme_points(60, 40, 130, 95)
    small = small[3:] + small[:3]  # begun at its right-most point, outside the first object's box
    inside_big_only = keypoint(30, 30, tool="extreme")
    routed = route(big + small + [inside_big_only, keypoint(80, 60)])
    first, second = routed.prompts
    assert labels_of(first) == [1, 1, 1, 1]  # not corrected: the latest object is the second
    assert labels_of(second) == [1, 1, 1, 1, 1]  # the click in both boxes: the smaller one
    assert routed.pending_regions == [inside_big_only]


def test_points_of_another_label_never_correct():
    routed = route(extreme_points(*CAR) + [keypoint(50, 35, label="Dog", tool="extreme"), keypoint(40, 30, "Dog")])
    car, dog = routed.prompts
    assert labels_of(car) == [1, 1, 1, 1]
    assert (dog.kind, dog.label) == (PromptKind.POINTS, "Dog")
    assert routed.pending == ['"extreme" "Dog": 1 of 4 extreme points']


def test_a_known_object_whose_points_are_gone_is_corrected_by_a_lone_click():
    points = extreme_points(*CAR)
    known = KnownObject(PromptKind.EXTREME, "extreme", "Car", CAR, tuple(p["id"] for p in points),
                        np.array([[50, 10], [50, 60], [20, 35], [80, 35]], np.float32),
                        (Click("c1", (40, 30), True),), ({"id": "mask1", "from_name": "mask"},))
    again = {**keypoint(40, 30, tool="extreme"), "id": "c1"}  # the earlier correction, still on screen
    routed = route([again, keypoint(60, 40, tool="extreme", positive=False)], [known])
    [prompt] = routed.prompts
    assert labels_of(prompt) == [1, 1, 1, 1, 1, 0]  # remembered anchors and click, then the new one
    [obj] = routed.objects
    assert obj.anchor_ids == known.anchor_ids and obj.mask_regions == known.mask_regions
    assert [c.region_id for c in obj.clicks] == ["c1", "kp60_40"]
    assert route([], [known]).prompts == []  # a known object no region touches is no prompt


def test_a_known_object_still_on_screen_is_formed_from_the_request_and_keeps_its_mask():
    points = extreme_points(*CAR)
    known = KnownObject(PromptKind.EXTREME, "extreme", "Car", CAR, tuple(p["id"] for p in points),
                        np.zeros((4, 2), np.float32), (Click("gone", (40, 30), True),), ({"id": "mask1"},))
    routed = route(points + [keypoint(60, 40, tool="extreme")], [known])
    [prompt] = routed.prompts
    assert labels_of(prompt) == [1, 1, 1, 1, 1]  # the request is the whole truth: "gone" is not on screen
    assert routed.objects[0].mask_regions == ({"id": "mask1"},)


def test_a_known_rectangle_takes_click_tool_corrections_after_it_is_gone():
    known = KnownObject(PromptKind.BOX, "box", "Car", (20, 10, 120, 60), ("rect20_10",), np.zeros((0, 2), np.float32))
    [prompt] = route([keypoint(50, 30, positive=False)], [known]).prompts
    assert prompt.kind is PromptKind.BOX and prompt.box == (20, 10, 120, 60) and labels_of(prompt) == [0]


def test_batch_reads_extreme_points_with_their_corrections():
    result = extreme_points(*CAR) + [keypoint(50, 35, tool="extreme", positive=False), keypoint(40, 30)]
    [prompt] = prompts_from_task(task(annotations=[{"id": 1, "result": result}]), LABELING, W, H).prompts
    assert labels_of(prompt) == [1, 1, 1, 1, 0, 1]


# -- the memory ------------------------------------------------------------------------------------

def obj(anchor: str, mask_id: str = "m") -> KnownObject:
    return KnownObject(PromptKind.BOX, "box", "Car", (0, 0, 10, 10), (anchor,), np.zeros((0, 2), np.float32),
                       mask_regions=({"id": mask_id},))


def test_known_objects_are_bounded_expire_and_the_latest_answered_comes_last():
    now = [0.0]
    store = RecentObjects(max_tasks=2, max_per_task=2, ttl_s=60, clock=lambda: now[0])
    store.remember((1, 1), [obj("a"), obj("b")])
    store.remember((1, 1), [obj("a", "m2")])
    assert [(o.anchor_ids, o.mask_regions[0]["id"]) for o in store.of_task((1, 1))] == [(("b",), "m"), (("a",), "m2")]
    store.remember((1, 1), [obj("c")], forgotten=[obj("b")])
    assert [o.anchor_ids for o in store.of_task((1, 1))] == [("a",), ("c",)]
    store.remember((1, 2), [obj("a")])
    store.remember((1, 3), [obj("a")])
    assert store.of_task((1, 1)) == []  # the least recently answered task went
    now[0] = 61
    assert store.of_task((1, 3)) == []


def test_answered_masks_beyond_the_budget_are_dropped_from_the_least_recently_answered_tasks():
    answered = AnsweredMask.of(np.ones((80, 100), bool), [])  # 1000 bytes packed
    store = RecentObjects(max_answer_bytes=2500)
    for task_id in (1, 2, 3):
        store.remember((1, task_id), [replace(obj("a"), answer=answered)])
    assert [o.answer for o in store.of_task((1, 1))] == [None]  # the oldest task's mask went, its object stayed
    assert [o.answer is answered for t in (2, 3) for o in store.of_task((1, t))] == [True, True]
    store.remember((1, 2), [replace(obj("b"), answer=answered)])  # task 2 again: task 3 is now the oldest
    assert [o.answer for o in store.of_task((1, 3))] == [None]
    assert [o.answer is answered for o in store.of_task((1, 2))] == [True, True]


# -- what the page gets back ---------------------------------------------------------------------

class CorrectingSegmenter(BoxSegmenter):
    """The extreme points' (or the box's) rectangle, plus a 10 px square around each positive
    correction, minus one around each negative."""

    def segment(self, image, prompt):
        self.prompts.append(prompt)
        anchors = 4 if prompt.kind is PromptKind.EXTREME else 0
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(v) for v in prompt.box)
        else:
            (x0, y0), (x1, y1) = prompt.points[:4].min(axis=0).astype(int), prompt.points[:4].max(axis=0).astype(int)
        mask = box_mask(x0, y0, x1, y1, image.width, image.height)
        for (x, y), positive in zip(prompt.points[anchors:].astype(int), prompt.point_labels[anchors:]):
            mask[max(y - 5, 0):y + 5, max(x - 5, 0):x + 5] = bool(positive)
        return Segmentation(mask=mask, score=0.9, label=prompt.label, model=self.model_name)


@pytest.fixture
def page(tmp_path):
    """``ask(context, task=None, extra_params=None) -> result`` against one app (one memory)."""
    return page_of(tmp_path, CorrectingSegmenter("extreme-fake"))


def page_of(tmp_path, extreme):
    segmenters = SegmenterSet(sam=CorrectingSegmenter("sam-fake"), extreme=extreme,
                              sam_name="sam-fake", extreme_version="v1")
    app, segmenters, _ = make_app(tmp_path, segmenters=segmenters)
    client = app.test_client()
    setups = {}

    def ask(context, the_task=None, extra_params=None):
        if setups.get("params", "unset") != extra_params:
            assert client.post("/setup", json=setup_body(extra_params)).status_code == 200
            setups["params"] = extra_params
        response = client.post("/predict", json=predict_body([the_task or task()], context=context))
        assert response.status_code == 200, response.get_json()
        return response.get_json()["results"][0]["result"]

    ask.segmenters = segmenters
    return ask


def brushes(result):
    return [r for r in result if r["type"] == "brushlabels" and not r.get("dynamic")]


def mask_of(result) -> np.ndarray:
    [brush] = brushes(result)
    return mask_from_region(brush, W, H)


def test_with_auto_accept_a_lone_correction_click_refines_the_same_region(page):
    points = extreme_points(*CAR)
    first = page([accepted(p) for p in points[:3]] + points[3:])  # the earlier points were accepted echoes
    [mask] = brushes(first)
    negative = keypoint(50, 35, tool="extreme", positive=False)
    result = page([negative])  # the page deleted the points when it accepted the mask
    assert [(r["id"], r["type"]) for r in result] == [(mask["id"], "brushlabels")]  # the click is dynamic: no echo
    assert not mask_of(result)[35, 50] and mask_of(result)[20, 30]
    result = page([keypoint(90, 35, tool="extreme")])  # right of the box: outside, a new group
    assert brushes(result) == [] and [r["id"] for r in result] == ["kp90_35"]
    result = page([keypoint(40, 20)])  # a click-tool click inside the box: a correction again
    assert [r["id"] for r in brushes(result)] == [mask["id"]]
    last = page.segmenters.extreme.prompts[-1]
    assert labels_of(last) == [1, 1, 1, 1, 0, 1] and last.points[4:].tolist() == [[50, 35], [40, 20]]


def test_without_auto_accept_corrections_ride_on_the_points_still_on_screen(page):
    points = extreme_points(*CAR)
    [mask] = brushes(page(points))
    correction = keypoint(50, 35, tool="extreme", positive=False)
    result = page(points + [correction])
    assert [r["id"] for r in result] == [mask["id"]]  # the points and the click are dynamic: accept clears them
    assert not mask_of(result)[35, 50]
    assert labels_of(page.segmenters.extreme.prompts[-1]) == [1, 1, 1, 1, 0]


def test_after_accept_the_clicks_on_screen_are_not_counted_twice(page):
    points = extreme_points(*CAR)
    [mask] = brushes(page(points))
    first, second = keypoint(50, 35, tool="extreme", positive=False), keypoint(30, 20, tool="extreme")
    page([first])
    result = page([first, second])  # Auto-Accept off: the first click still waits beside the second
    assert [r["id"] for r in brushes(result)] == [mask["id"]]
    assert labels_of(page.segmenters.extreme.prompts[-1]) == [1, 1, 1, 1, 0, 1]


class ForgetfulSegmenter(BoxSegmenter):
    """The extreme points' rectangle; corrected, only a 10 px square at the latest positive click,
    or the rectangle less one at a negative click: a model that loses the object when corrected."""

    def segment(self, image, prompt):
        self.prompts.append(prompt)
        (x0, y0), (x1, y1) = prompt.points[:4].min(axis=0).astype(int), prompt.points[:4].max(axis=0).astype(int)
        mask = box_mask(x0, y0, x1, y1, image.width, image.height)
        if len(prompt.points) > 4:
            (x, y), positive = prompt.points[-1].astype(int), bool(prompt.point_labels[-1])
            clicked = box_mask(max(x - 5, 0), max(y - 5, 0), x + 5, y + 5, image.width, image.height)
            mask = clicked if positive else mask & ~clicked
        return Segmentation(mask=mask, score=0.9, label=prompt.label, model=self.model_name)


def test_a_correction_keeps_the_rest_of_the_mask_it_refines(tmp_path):
    ask = page_of(tmp_path, ForgetfulSegmenter("extreme-fake"))
    points = extreme_points(*CAR)
    first = mask_of(ask(points))
    removed = mask_of(ask([keypoint(50, 35, tool="extreme", positive=False)]))
    assert not removed[35, 50] and removed.sum() == first.sum() - 100
    kept = mask_of(ask([keypoint(30, 20, tool="extreme")]))  # the model answers its 10 px square alone
    assert (kept == removed).all()  # nothing of the mask lost, and the removed spill stays removed
    # Nothing answered before on this task: the model's answer as it is.
    alone = mask_of(ask(points + [keypoint(30, 20, tool="extreme")], task(task_id=2)))
    assert alone.sum() == 100 and alone[20, 30]


def test_only_the_extreme_point_models_answers_are_kept_for_merging_corrections(tmp_path):
    segmenters = SegmenterSet(sam=CorrectingSegmenter("sam-fake"), extreme=CorrectingSegmenter("extreme-fake"),
                              sam_name="sam-fake", extreme_version="v1")
    app, _, _ = make_app(tmp_path, segmenters=segmenters)
    client = app.test_client()
    assert client.post("/setup", json=setup_body(None)).status_code == 200
    for the_task, context in ((task(task_id=1), extreme_points(*CAR)), (task(task_id=2), [rectangle(20, 10, 120, 60)])):
        assert client.post("/predict", json=predict_body([the_task], context=context)).status_code == 200
    known = app.extensions["segmentation_model"].known_objects
    [by_extreme], [by_sam] = known.of_task(("7", 1)), known.of_task(("7", 2))
    assert by_extreme.kind is PromptKind.EXTREME and by_extreme.answer is not None
    assert by_sam.kind is PromptKind.BOX and by_sam.answer is None  # SAM refines from its logits: no mask kept


def test_a_fresh_set_of_four_points_starts_a_new_object(page):
    [first] = brushes(page(extreme_points(*CAR)))
    second = page(extreme_points(110, 20, 180, 90))
    [mask] = brushes(second)
    assert mask["id"] != first["id"]
    assert labels_of(page.segmenters.extreme.prompts[-1]) == [1, 1, 1, 1]


def test_a_smart_rectangle_is_refined_by_clicks_after_it_is_gone(page):
    [mask] = brushes(page([rectangle(20, 10, 120, 60)]))
    result = page([keypoint(70, 35, positive=False)])
    assert [r["id"] for r in brushes(result)] == [mask["id"]]
    prompt = page.segmenters.sam.prompts[-1]
    assert prompt.kind is PromptKind.BOX and labels_of(prompt) == [0]


def test_kept_extreme_points_stay_and_correction_clicks_still_go_on_accept(page):
    keep = {"keep_extreme_points": True}
    points = extreme_points(*CAR)
    page(points, extra_params=keep)
    kept = [dict(accepted(p), readonly=True) for p in points]
    waiting = accepted(keypoint(50, 35, tool="extreme", positive=False))  # an earlier click the page shows still
    fresh = keypoint(30, 20, tool="extreme")
    result = page(kept + [waiting, fresh], extra_params=keep)
    assert [(r["id"], r.get("dynamic"), r.get("readonly")) for r in result if r["type"] == "keypointlabels"] == \
        [(waiting["id"], True, None)]
    assert labels_of(page.segmenters.extreme.prompts[-1]) == [1, 1, 1, 1, 1, 1]


def test_a_refined_mask_of_a_merging_label_does_not_merge_with_its_own_earlier_mask(page):
    merge = {"policies": {"Car": {"merge_overlapping": True}}}
    points = extreme_points(*CAR)
    [mask] = brushes(page(points, extra_params=merge))
    draft = {"id": 3, "result": [mask], "updated_at": "2026-12-06T10:00:00Z"}
    result = page([keypoint(50, 35, tool="extreme", positive=False)], task(drafts=[draft]), merge)
    assert [r["id"] for r in result] == [mask["id"]]
    assert not mask_of(result)[35, 50]  # not the union with the earlier mask, which covered it


def test_a_mask_merged_into_another_region_is_no_longer_corrected(page):
    merge = {"policies": {"Car": {"merge_overlapping": True}}}
    other = region_from_mask(box_mask(60, 30, 100, 70), label="Car", from_name="mask", to_name="image", score=1)
    draft = {"id": 3, "result": [other], "updated_at": "2026-12-06T10:00:00Z"}
    [merged] = brushes(page(extreme_points(*CAR), task(drafts=[draft]), merge))
    assert merged["id"] == other["id"]
    result = page([keypoint(50, 35, tool="extreme")], task(drafts=[draft]), merge)
    assert brushes(result) == [] and [r["id"] for r in result] == ["kp50_35"]  # the first of a new group


def test_an_object_whose_mask_a_later_object_absorbed_is_no_longer_corrected(page):
    merge = {"policies": {"Car": {"merge_overlapping": True}}}
    [first] = brushes(page(extreme_points(*CAR), extra_params=merge))
    draft = {"id": 3, "result": [first], "updated_at": "2026-12-06T10:00:00Z"}
    second = extreme_points(60, 30, 100, 70)
    [merged] = brushes(page(second[3:] + second[:3], task(drafts=[draft]), merge))  # begun right of the first box
    assert merged["id"] == first["id"]
    result = page([keypoint(50, 35, tool="extreme")], task(drafts=[{**draft, "result": [merged]}]), merge)
    assert brushes(result) == [] and [r["id"] for r in result] == ["kp50_35"]  # the first of a new group


def test_a_polygon_part_the_refined_mask_no_longer_has_is_removed(tmp_path):
    from test_app_polygons import POLYGON_CONFIG, PaintingSegmenter, post, with_speck_and_hole

    app, _, _ = make_app(tmp_path, segmenters=SegmenterSet(sam=PaintingSegmenter(with_speck_and_hole),
                                                           sam_name="sam-fake"))
    [entry], _ = post(app, [rectangle(50, 20, 120, 70)], config=POLYGON_CONFIG)
    body, speck = [r for r in entry["result"] if r["type"] == "polygonlabels"]
    [entry], _ = post(app, [rectangle(50, 20, 120, 70)], {"policies": {"Car": {"keep_largest": True}}},
                      config=POLYGON_CONFIG)  # the same rectangle again: the same object, now without the speck
    assert [(r["id"], r.get("dynamic")) for r in entry["result"]] == [(body["id"], None), (speck["id"], True)]


def test_an_object_with_more_corrections_than_the_limit_comes_back_with_the_reason(tmp_path):
    app, segmenters, _ = make_app(tmp_path, max_prompt_regions=6)
    client = app.test_client()
    assert client.post("/setup", json=setup_body()).status_code == 200

    def ask(context):
        return client.post("/predict", json=predict_body([task()], context=context)).get_json()["results"][0]["result"]

    ask(extreme_points(*CAR))
    ask([keypoint(40, 30, tool="extreme")])
    ask([keypoint(60, 30, tool="extreme")])  # 4 points and 2 corrections: at the limit
    [echo] = ask([keypoint(40, 40, tool="extreme")])
    assert echo["id"] == "kp40_40" and "over the limit of 6 (MAX_PROMPT_REGIONS)" in echo["meta"]["text"][0]
    assert len(segmenters.extreme.prompts) == 3
