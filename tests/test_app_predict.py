"""/predict through the real app with fake segmenters whose right mask is a known box:
interactive (rectangle, clicks, 1/3/4/8 extreme points, fallbacks, merging, errors) and batch
(order, empty entries, per-task failures, deduplication, policies)."""

import io
import logging
from urllib.parse import quote_from_bytes

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from backend.images import ImageLoader
from backend.project_options import ProjectOptions
from backend.protocol import mask_from_region, region_from_mask
from backend.prompts import PromptError, PromptKind
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings
from segmentation_fakes import CONFIG, IMAGE_URL, H, W, FakeImages, box_mask, extreme_points, keypoint, \
    make_app, predict_body, rectangle, setup_body, task


@pytest.fixture
def app(tmp_path):
    app, _, _ = make_app(tmp_path)
    return app


def interactive(app, context, extra_params=None, the_task=None):
    client = app.test_client()
    version = client.post("/setup", json=setup_body(extra_params)).get_json()["model_version"]
    response = client.post("/predict", json=predict_body([the_task or task()], context=context))
    return response, version


def masks(entry):
    return [mask_from_region(region, W, H) for region in entry["result"]]


def test_interactive_rectangle_gives_its_mask_as_a_valid_brush_prediction(app):
    response, version = interactive(app, [rectangle(50, 20, 120, 70)])
    assert response.status_code == 200
    [entry] = response.get_json()["results"]
    [region] = entry["result"]
    assert entry["model_version"] == version and entry["score"] == pytest.approx(0.9)
    assert (region["from_name"], region["to_name"], region["type"]) == ("mask", "image", "brushlabels")
    assert region["value"]["brushlabels"] == ["Car"] and region["meta"] == {"text": ["sam-fake"]}
    assert (region["original_width"], region["original_height"]) == (W, H)
    assert np.array_equal(masks(entry)[0], box_mask(50, 20, 120, 70))
    assert LabelInterface(CONFIG).validate_prediction(entry, return_errors=True) == []


def test_clicks_go_to_sam(tmp_path):
    app, segmenters, _ = make_app(tmp_path)
    segmenters.sam.margin = 5
    response, _ = interactive(app, [keypoint(40, 30), keypoint(60, 50), keypoint(50, 40, positive=False)])
    [prompt] = segmenters.sam.prompts
    assert prompt.kind is PromptKind.POINTS and prompt.point_labels.tolist() == [1, 1, 0]
    assert np.array_equal(masks(response.get_json()["results"][0])[0], box_mask(35, 25, 65, 55))


def unserved_notes(response) -> dict[str, str]:
    """Region id -> note of the regions an interactive answer hands back unsegmented."""
    assert response.status_code == 200, response.get_json()
    return {region["id"]: region["meta"]["text"][0] for region in response.get_json()["results"][0]["result"]
            if region["meta"]["text"][0].startswith("Not segmented: ")}


def test_clicks_without_sam_come_back_with_the_reason_as_their_note(tmp_path):
    app, _, _ = make_app(tmp_path, sam=False)
    click = keypoint(40, 30)
    response, _ = interactive(app, [click])
    [echo] = response.get_json()["results"][0]["result"]
    assert echo["id"] == click["id"] and echo["value"] == click["value"] and "dynamic" not in echo
    assert unserved_notes(response) == {click["id"]: echo["meta"]["text"][0]}
    assert "no segmenter for a points prompt" in echo["meta"]["text"][0]


@pytest.mark.parametrize("count, objects", [(1, 0), (3, 0), (4, 1), (8, 2)])
def test_extreme_points_answer_per_complete_group(tmp_path, count, objects):
    app, segmenters, images = make_app(tmp_path)
    points = extreme_points(20, 10, 80, 60) + extreme_points(120, 30, 180, 90)
    response, _ = interactive(app, points[:count])
    assert response.status_code == 200
    entry = response.get_json()["results"][0]
    assert len([r for r in entry["result"] if r["type"] == "brushlabels"]) == objects  # + pending points echoed
    assert [p.kind for p in segmenters.extreme.prompts] == [PromptKind.EXTREME] * objects
    assert segmenters.sam.prompts == []
    if objects == 2:
        assert [m.sum() for m in masks(entry)] == [60 * 50, 60 * 60]
        assert np.array_equal(masks(entry)[1], box_mask(120, 30, 180, 90))


def test_extreme_points_without_the_extreme_model_go_to_sam_and_say_so(tmp_path):
    app, segmenters, _ = make_app(tmp_path, extreme=False)
    response, _ = interactive(app, extreme_points(20, 10, 80, 60))
    [region] = response.get_json()["results"][0]["result"]
    assert segmenters.sam.prompts[0].kind is PromptKind.EXTREME
    assert "extreme-point model not loaded" in region["meta"]["text"][0]


def test_rectangle_without_sam_falls_back_to_the_extreme_model_box_mode(tmp_path):
    app, segmenters, _ = make_app(tmp_path, sam=False)
    response, version = interactive(app, [rectangle(50, 20, 120, 70)])
    [region] = response.get_json()["results"][0]["result"]
    assert segmenters.extreme.prompts[0].kind is PromptKind.BOX
    assert region["meta"] == {"text": ["extreme-fake (box mode, SAM not loaded)"]}
    assert version == "segassist-v1+nosam"


def test_interactive_echoes_the_view_rotation(app):
    points = [dict(p, image_rotation=270) for p in extreme_points(20, 10, 80, 60)]
    [region] = interactive(app, points)[0].get_json()["results"][0]["result"]
    assert region["image_rotation"] == 270 and (region["original_width"], region["original_height"]) == (W, H)


def test_a_different_image_size_in_the_browser_is_logged(app, caplog):
    caplog.set_level(logging.WARNING)
    response, _ = interactive(app, [dict(rectangle(50, 20, 120, 70), original_width=400, original_height=200)])
    assert response.status_code == 200
    assert "Label Studio shows the image at 400 x 200 px, the backend loaded it at 200 x 100 px" in caplog.text


def test_context_without_prompt_regions_answers_empty_without_loading_the_image(tmp_path):
    app, _, images = make_app(tmp_path)
    response, version = interactive(app, [{"from_name": "mask", "type": "brushlabels", "value": {}}])
    assert response.get_json()["results"] == [{"result": [], "score": 0.0, "model_version": version}]
    assert images.loaded == []


def test_interactive_merge_joins_masks_on_screen(app):
    on_screen = region_from_mask(box_mask(100, 20, 160, 70), label="Car", from_name="mask", to_name="image", score=1)
    draft = {"id": 5, "result": [on_screen], "updated_at": "2025-11-25T10:00:00Z"}
    older = {"id": 4, "result": [], "updated_at": "2025-11-24T10:00:00Z"}
    response, _ = interactive(app, [rectangle(50, 20, 120, 70)], {"policies": {"Car": {"merge_overlapping": True}}},
                              task(drafts=[draft, older]))
    [merged] = masks(response.get_json()["results"][0])
    assert np.array_equal(merged, box_mask(50, 20, 160, 70))


def test_without_the_merge_policy_masks_on_screen_are_ignored(app):
    on_screen = region_from_mask(box_mask(100, 20, 160, 70), label="Car", from_name="mask", to_name="image", score=1)
    response, _ = interactive(app, [rectangle(50, 20, 120, 70)], None, task(drafts=[{"result": [on_screen]}]))
    assert np.array_equal(masks(response.get_json()["results"][0])[0], box_mask(50, 20, 120, 70))


def outside_keypoint():
    region = keypoint(10, 10)
    region["value"]["x"] = 120
    return region


@pytest.mark.parametrize("context, message", [
    ([keypoint(10, 10, label="Unicorn")], 'label "Unicorn"'),
    ([outside_keypoint()], "outside the image"),
    ([rectangle(50, 20, 50, 70)], "zero area"),
])
def test_bad_interactive_prompts_come_back_with_the_reason_beside_the_good_ones(app, context, message):
    """Label Studio 1.23's labeling page shows nothing of an error answer (labeling_page.py): the
    prompt's region comes back with the reason as its note, and the other prompts get their masks."""
    good = rectangle(50, 20, 120, 70)
    response, _ = interactive(app, context + [good])
    notes = unserved_notes(response)
    assert list(notes) == [context[0]["id"]] and message in notes[context[0]["id"]]
    [mask] = [region for region in response.get_json()["results"][0]["result"] if region["type"] == "brushlabels"]
    assert np.array_equal(mask_from_region(mask, W, H), box_mask(50, 20, 120, 70))


class RaisingSegmenter:
    def __init__(self, error: Exception):
        self.error = error

    def segment(self, image, prompt):
        raise self.error


def test_a_prompt_error_is_the_annotators_and_a_bug_is_ours(tmp_path, caplog):
    """PromptError comes back as the prompt's note (interactive) or skips the prompt (batch) with its
    reason; any other ValueError from a segmenter is a bug: 500 and a logged traceback, never a "bad prompt"."""
    rect = rectangle(50, 20, 120, 70)
    app, _, _ = make_app(tmp_path, segmenters=SegmenterSet(sam=RaisingSegmenter(PromptError("box (1, 2, 1, 2) has "
                                                                                           "no area")), sam_name="sam-fake"))
    response, _ = interactive(app, [rect])
    assert unserved_notes(response) == {rect["id"]: "Not segmented: box (1, 2, 1, 2) has no area"}
    app, _, _ = make_app(tmp_path, segmenters=SegmenterSet(sam=RaisingSegmenter(ValueError("bug")), sam_name="sam-fake"))
    response, _ = interactive(app, [rect])
    assert response.status_code == 500 and "has no area" not in response.get_json()["error"]
    with caplog.at_level(logging.WARNING):
        app, _, _ = make_app(tmp_path, segmenters=SegmenterSet(sam=RaisingSegmenter(PromptError("no area")),
                                                               sam_name="sam-fake"))
        client = app.test_client()
        client.post("/setup", json=setup_body())
        answer = client.post("/predict", json=predict_body([task(predictions=[{"result": [rect]}])]))
    assert answer.status_code == 200 and answer.get_json()["results"] == [[]]
    assert "skipped a box prompt: no area" in caplog.text


def test_unloadable_image_is_422_in_interactive_mode(app):
    response, _ = interactive(app, [rectangle(50, 20, 120, 70)], the_task=task(url="http://images.test/gone.jpg"))
    assert response.status_code == 422 and "image not loaded: no image at" in response.get_json()["error"]


def test_data_uri_images_through_the_real_loader(tmp_path):
    """A percent-encoded data: URI is an image like any other; a malformed one is 422, not 500."""
    app, _, _ = make_app(tmp_path, images=ImageLoader(Settings()))
    png = io.BytesIO()
    Image.new("RGB", (W, H)).save(png, format="PNG")
    response, _ = interactive(app, [rectangle(50, 20, 120, 70)],
                              the_task=task(url="data:image/png," + quote_from_bytes(png.getvalue())))
    assert response.status_code == 200 and len(response.get_json()["results"][0]["result"]) == 1
    response, _ = interactive(app, [rectangle(50, 20, 120, 70)], the_task=task(url="data:image/png,%ZZ"))
    assert response.status_code == 422 and "image not loaded: the 3 bytes" in response.get_json()["error"]


@pytest.mark.parametrize("body, message", [
    ({"project": "7.1", "label_config": CONFIG}, '"tasks"'),
    ({"tasks": [1], "project": "7.1"}, '"tasks"'),
    ({"tasks": [], "label_config": CONFIG}, "project must be"),
    (predict_body([task(), task(2)], context=[]), "one task"),
    ({"tasks": [task()], "project": "7.1", "label_config": CONFIG, "params": {"context": {"res": []}}}, '"result"'),
    ({"tasks": [task()], "project": "7.1", "label_config": 5}, '"label_config"'),
    ({"tasks": [task()], "project": "8.1"}, "no /setup seen for project 8"),
])
def test_malformed_predict_requests_are_400(app, body, message):
    response = app.test_client().post("/predict", json=body)
    assert response.status_code == 400 and message in response.get_json()["error"]


def test_bad_label_config_in_predict_is_422(app):
    response = app.test_client().post("/predict", json=predict_body([task()], label_config="<View/>"))
    assert response.status_code == 422 and "BrushLabels" in response.get_json()["error"]


# -- batch ---------------------------------------------------------------------------------------


def prediction(*regions):
    return {"id": 90, "result": list(regions), "model_version": "detector", "score": 0.5}


def test_batch_answers_every_task_in_order(tmp_path, caplog):
    images = FakeImages({IMAGE_URL: (W, H), "http://images.test/big.jpg": (400, 300)})
    app, _, _ = make_app(tmp_path, images=images)
    client = app.test_client()
    version = client.post("/setup", json=setup_body()).get_json()["model_version"]
    tasks = [
        task(1, predictions=[prediction(rectangle(50, 20, 120, 70))]),
        task(2),  # no prompts
        task(3, url="http://images.test/gone.jpg", predictions=[prediction(rectangle(0, 0, 50, 50))]),
        task(4, url="http://images.test/big.jpg",
             annotations=[{"id": 1, "result": extreme_points(100, 100, 300, 200, size=(400, 300)),
                           "was_cancelled": False}]),
    ]
    caplog.set_level(logging.WARNING)
    response = client.post("/predict", json=predict_body(tasks))
    results = response.get_json()["results"]
    assert response.status_code == 200 and len(results) == 4
    assert results[1] == [] and results[2] == []
    assert results[0]["model_version"] == version and results[3]["model_version"] == version
    assert np.array_equal(masks(results[0])[0], box_mask(50, 20, 120, 70))
    [big] = results[3]["result"]
    assert (big["original_width"], big["original_height"]) == (400, 300)
    assert np.array_equal(mask_from_region(big, 400, 300), box_mask(100, 100, 300, 200, 400, 300))
    assert "task 3: image not loaded" in caplog.text
    for entry in (results[0], results[3]):
        assert LabelInterface(CONFIG).validate_prediction(entry, return_errors=True) == []


def test_each_batch_task_that_stores_nothing_logs_one_line_with_the_reason(tmp_path, caplog):
    app, _, _ = make_app(tmp_path)
    client = app.test_client()
    client.post("/setup", json=setup_body())
    tasks = [
        task(1),
        task(2, url="http://images.test/gone.jpg", predictions=[prediction(rectangle(0, 0, 50, 50))]),
        task(3, predictions=[prediction(keypoint(10, 10, label="Unicorn"))]),
        task(4, predictions=[prediction(*extreme_points(50, 20, 120, 70)[:3])]),
    ]
    caplog.set_level(logging.INFO)
    assert client.post("/predict", json=predict_body(tasks)).get_json()["results"] == [[], [], [], []]
    lines = [r.getMessage() for r in caplog.records if "no prediction stored" in r.getMessage()]
    assert len(lines) == 4, lines
    assert lines[0] == "task 1: no prediction stored: no prompt in its predictions or annotations (regions of " \
                       "extreme, click, box)"
    assert lines[1].startswith("task 2: no prediction stored: image not loaded")
    assert lines[2] == "task 3: no prediction stored: no prompt was usable (the warnings before say why)"
    assert lines[3] == 'task 4: no prediction stored: unfinished prompts: "extreme" "Car": 3 of 4 extreme points'


def test_batch_uses_each_prompt_once_and_skips_cancelled_annotations(tmp_path):
    app, segmenters, _ = make_app(tmp_path)
    box = rectangle(50, 20, 120, 70)
    the_task = task(predictions=[prediction(box)], annotations=[
        {"id": 1, "result": [dict(box, id="kept")], "was_cancelled": False},
        {"id": 2, "result": [rectangle(0, 0, 40, 40)], "was_cancelled": True},
    ])
    [entry] = app.test_client().post("/predict", json=predict_body([the_task])).get_json()["results"]
    assert len(entry["result"]) == 1 and len(segmenters.sam.prompts) == 1


def test_a_bad_region_in_a_batch_task_skips_only_that_prompt(tmp_path, caplog):
    app, _, _ = make_app(tmp_path)
    caplog.set_level(logging.WARNING)
    the_task = task(predictions=[prediction(rectangle(50, 20, 120, 70), keypoint(10, 10, label="Unicorn"))])
    [entry] = app.test_client().post("/predict", json=predict_body([the_task])).get_json()["results"]
    assert len(entry["result"]) == 1
    assert 'task 1: skipped a prompt: keypointlabels "click" #2 has label "Unicorn"' in caplog.text


def test_a_failing_segmenter_loses_only_its_task(tmp_path, caplog):
    app, segmenters, _ = make_app(tmp_path)
    real = segmenters.sam.segment

    def flaky(image, prompt):
        if prompt.box[0] == 0:
            raise RuntimeError("CUDA out of memory")
        return real(image, prompt)

    segmenters.sam.segment = flaky
    tasks = [task(1, predictions=[prediction(rectangle(0, 0, 40, 40))]),
             task(2, predictions=[prediction(rectangle(50, 20, 120, 70))])]
    caplog.set_level(logging.ERROR)
    results = app.test_client().post("/predict", json=predict_body(tasks)).get_json()["results"]
    assert results[0] == [] and len(results[1]["result"]) == 1
    assert "task 1: prediction failed" in caplog.text


def test_batch_stops_starting_tasks_when_the_time_budget_is_spent(tmp_path, caplog):
    app, segmenters, _ = make_app(tmp_path, predict_budget_s=0.0)
    tasks = [task(i, predictions=[prediction(rectangle(50, 20, 120, 70))]) for i in (1, 2, 3)]
    caplog.set_level(logging.WARNING)
    results = app.test_client().post("/predict", json=predict_body(tasks)).get_json()["results"]
    assert len(results[0]["result"]) == 1 and results[1:] == [[], []]
    assert len(segmenters.sam.prompts) == 1
    assert "2 of 3 tasks left for the next call" in caplog.text


def test_batch_without_any_segmenter_answers_empty_entries(tmp_path):
    app, _, _ = make_app(tmp_path, sam=False, extreme=False)
    results = app.test_client().post("/predict", json=predict_body(
        [task(predictions=[prediction(rectangle(50, 20, 120, 70))])])).get_json()["results"]
    assert results == [[]]


def test_batch_applies_project_policies(tmp_path):
    app, _, _ = make_app(tmp_path, default_options=ProjectOptions.parse(
        {"policies": {"*": {"merge_overlapping": True}}}, "POLICIES"))
    client = app.test_client()
    client.post("/setup", json=setup_body({"policies": {"Dog": {"merge_overlapping": False}}}))
    the_task = task(predictions=[prediction(rectangle(10, 10, 60, 60), rectangle(40, 40, 90, 90),
                                            rectangle(10, 10, 60, 60, "Dog"), rectangle(40, 40, 90, 90, "Dog"))])
    [entry] = client.post("/predict", json=predict_body([the_task])).get_json()["results"]
    labels = [r["value"]["brushlabels"][0] for r in entry["result"]]
    assert labels == ["Car", "Dog", "Dog"]
    assert np.array_equal(masks(entry)[0], box_mask(10, 10, 60, 60) | box_mask(40, 40, 90, 90))

