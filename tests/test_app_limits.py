"""Malformed input and unbounded work through the real app: every malformed field answers 4xx naming
it (a per-task error in batch), the webhook never 5xx, the body limit (413), per-request prompt and
on-screen mask limits (422), label configs parsed once per content, START_TRAINING behind Basic Auth."""

import base64
import copy
import io

import pytest

import backend.model
from active_learning_fakes import connect
from backend.protocol import region_from_mask
from segmentation_fakes import CONFIG, box_mask, extreme_points, keypoint, make_app, predict_body, rectangle, \
    setup_body, task

MERGE = {"policies": {"Car": {"merge_overlapping": True}}}


@pytest.fixture
def client(tmp_path):
    app, _, _ = make_app(tmp_path)
    client = app.test_client()
    assert client.post("/setup", json=setup_body(MERGE)).status_code == 200
    return client


def brush(mask=None, region_id="b1", **value):
    region = region_from_mask(box_mask(10, 10, 60, 60) if mask is None else mask, label="Car", from_name="mask",
                              to_name="image", score=0.9)
    region["id"] = region_id
    region["value"].update(value)
    return region


def interactive_body(context, the_task=None):
    return predict_body([the_task or task()], context=context)


def with_field(region, path, value):
    region = copy.deepcopy(region)
    target = region
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    target[last] = value
    return region


DEEP = "[" * 100_000 + "]" * 100_000

# (body, the field or reason the answer must name)
MALFORMED = [
    (interactive_body([with_field(rectangle(10, 10, 50, 50), "value.rotation", "ninety")]), "value.rotation"),
    (interactive_body([with_field(rectangle(10, 10, 50, 50), "value.x", [1])]), "value.x"),
    (interactive_body([with_field(rectangle(10, 10, 50, 50), "value.rectanglelabels", "Car")]), "rectanglelabels"),
    (interactive_body([with_field(rectangle(10, 10, 50, 50), "value", "x=10")]), "result[0].value"),
    (interactive_body([with_field(rectangle(10, 10, 50, 50), "from_name", ["box"])]), "from_name"),
    (interactive_body([with_field(rectangle(10, 10, 50, 50), "original_width", [640])]), "original_width"),
    (interactive_body([with_field(rectangle(10, 10, 50, 50), "image_rotation", "90")]), "image_rotation"),
    (interactive_body([with_field(keypoint(20, 20), "is_positive", "no")]), "is_positive"),
    (interactive_body([with_field(keypoint(20, 20), "value.y", float("nan"))]), "value.y"),
    (interactive_body([keypoint(20, 20), 5]), "result[1]"),
    (interactive_body([keypoint(20, 20)], task(drafts=[{"result": [with_field(brush(), "value", "rle")]}])),
     "drafts[0].result[0].value"),
    (interactive_body([keypoint(20, 20)], task(drafts=[{"result": [with_field(brush(), "value.brushlabels", 7)]}])),
     "brushlabels"),
    (interactive_body([keypoint(20, 20)], task(drafts=[{"result": [brush()], "updated_at": 5}])), "updated_at"),
    (interactive_body([keypoint(20, 20)], task(drafts={"result": []})), "drafts"),
    (interactive_body([keypoint(20, 20)], {**task(), "data": ["image"]}), "data"),
    (interactive_body([keypoint(20, 20)], {**task(), "id": "1" * 5000}), "id"),
    (interactive_body([keypoint(20, 20)], {**task(), "annotations": [{"result": "none"}]}), "annotations[0].result"),
    ({**interactive_body([keypoint(20, 20)]), "project": "9" * 5000}, "project"),
    ({**interactive_body([keypoint(20, 20)]), "project": {"id": "x"}}, "project"),
    ({**interactive_body([keypoint(20, 20)]), "tasks": "1"}, "tasks"),
    ({**interactive_body([]), "params": {"context": []}}, "params.context"),
    ({**interactive_body([keypoint(20, 20)]), "label_config": ["<View/>"]}, "label_config"),
]


@pytest.mark.parametrize("body, field", MALFORMED, ids=[field for _, field in MALFORMED])
def test_malformed_predict_fields_answer_4xx_naming_them(client, body, field):
    response = client.post("/predict", json=body)
    assert 400 <= response.status_code < 500, response.get_json()
    assert field in response.get_json()["error"]


@pytest.mark.parametrize("url", ["http://[::1/x.png", "http://ls:99999/x.png", "http://a\\@b/x.png"])
def test_malformed_image_urls_are_4xx(tmp_path, url):
    from backend.images import ImageLoader
    from backend.settings import Settings

    app, _, _ = make_app(tmp_path, images=ImageLoader(Settings()))
    response = app.test_client().post("/predict", json=interactive_body([rectangle(10, 10, 50, 50)], task(url=url)))
    assert response.status_code == 422 and "image not loaded" in response.get_json()["error"]


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook", "/versions"])
def test_bodies_nested_too_deeply_are_400(client, path):
    response = client.open(path, method="GET" if path == "/versions" else "POST", data=DEEP,
                           content_type="application/json")
    assert response.status_code in (200, 400)  # /versions reads an optional body
    if path != "/versions":
        assert "nested too deeply" in response.get_json()["error"]


def test_malformed_batch_tasks_get_a_per_task_error_and_the_others_their_masks(client, caplog):
    good = task(1, predictions=[{"result": [rectangle(10, 10, 50, 50)]}])
    bad = task(2, predictions=[{"result": [with_field(rectangle(10, 10, 50, 50), "value.rotation", "x")]}])
    odd = task(3, annotations=[{"result": [rectangle(10, 10, 50, 50)], "updated_at": []}])
    mixed = task(4, predictions=[{"result": [with_field(rectangle(10, 10, 50, 50), "value", "x"),
                                             rectangle(60, 10, 90, 50)]}])
    response = client.post("/predict", json=predict_body([good, bad, odd, mixed]))
    assert response.status_code == 200
    first, second, third, fourth = response.get_json()["results"]
    assert first["result"] and second == [] and third == []
    assert len(fourth["result"]) == 1  # the bad region costs only itself
    assert "task.predictions[0].result[0].value.rotation must be a number" in caplog.text
    assert "task.annotations[0].updated_at must be a string" in caplog.text
    assert "skipped a malformed region: task.predictions[0].result[0].value must be an object" in caplog.text


WEBHOOKS = [
    {"action": "ANNOTATION_CREATED", "project": {"id": 5}, "annotation": [1, 2]},
    {"action": "ANNOTATION_CREATED", "project": {"id": 5}, "annotation": {"id": 1, "result": "x"}},
    {"action": "ANNOTATIONS_CREATED", "project": {"id": 5}, "annotation": [{"id": "a"}]},
    {"action": "ANNOTATIONS_DELETED", "project": {"id": 5}, "annotations": [None]},
    {"action": "ANNOTATION_UPDATED", "project": "9" * 5000, "annotation": {"id": 1}},
    {"action": "ANNOTATION_UPDATED", "project": [5], "annotation": {"id": 1}},
    {"action": "TASKS_CREATED", "project": {"id": {"x": 1}}, "tasks": "all"},
    {"action": ["START_TRAINING"]},
    {"action": "START_TRAINING", "project": None},
    [1, 2],
]


@pytest.mark.parametrize("body", WEBHOOKS)
def test_the_webhook_answers_malformed_events_with_2xx_or_4xx(tmp_path, body):
    from backend.components import Components
    from backend.app import create_app
    from backend.segmenter_set import SegmenterSet
    from backend.settings import Settings

    settings = Settings(model_dir=tmp_path)
    learning = Components(settings, segmenters=SegmenterSet(), images=object(), executor=object())
    client = create_app(components=learning).test_client()
    response = client.post("/webhook", json=body)
    assert response.status_code < 500, response.get_json()


@pytest.mark.parametrize("extra_params", ["9" * 5000, "[" * 5000 + "]" * 5000, {"policies": {"*": [[[[]]]]}}])
def test_setup_refuses_malformed_extra_params_with_422(tmp_path, extra_params):
    app, _, _ = make_app(tmp_path)
    response = app.test_client().post("/setup", json=setup_body(extra_params))
    assert response.status_code == 422 and "extra params" in response.get_json()["error"]


@pytest.mark.parametrize("policy", [{"dilate_px": 100000}, {"min_island_px": 10**15}, {"fill_holes": -3}])
def test_setup_refuses_policy_values_out_of_range_naming_the_key(tmp_path, policy):
    app, _, _ = make_app(tmp_path)
    response = app.test_client().post("/setup", json=setup_body({"policies": {"Car": policy}}))
    assert response.status_code == 422 and f'policies["Car"].{next(iter(policy))}' in response.get_json()["error"]


# --- finding 8: the body limit -----------------------------------------------------------------


def test_bodies_over_max_request_bytes_are_413(tmp_path):
    app, _, _ = make_app(tmp_path, max_request_bytes=10_000)
    client = app.test_client()
    for path in ("/webhook", "/predict", "/setup"):
        response = client.post(path, data=b"{" + b" " * 20_000 + b"}", content_type="application/json")
        assert response.status_code == 413 and "MAX_REQUEST_BYTES" in response.get_json()["error"]
    chunked = client.post("/webhook", input_stream=io.BytesIO(b"{" + b" " * 20_000 + b"}"),
                          content_type="application/json", environ_overrides={"wsgi.input_terminated": True})
    assert chunked.status_code == 413  # no Content-Length: cut while reading
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}}).status_code == 200


# --- finding 5: work per request ---------------------------------------------------------------


def test_more_prompt_regions_than_the_limit_are_422_before_any_model_runs(tmp_path):
    app, segmenters, images = make_app(tmp_path, max_prompt_regions=8)
    client = app.test_client()
    client.post("/setup", json=setup_body())
    points = [keypoint(10 + i, 20) for i in range(9)]
    response = client.post("/predict", json=interactive_body(points))
    assert response.status_code == 422 and "MAX_PROMPT_REGIONS" in response.get_json()["error"]
    assert segmenters.sam.prompts == [] and images.loaded == []
    objects = extreme_points(20, 10, 80, 60) * 2
    assert client.post("/predict", json=interactive_body(objects)).status_code == 200  # 8: at the limit

    crowded = task(1, predictions=[{"result": [rectangle(10 + i, 10, 60, 60) for i in range(9)]}])
    assert client.post("/predict", json=predict_body([crowded])).get_json()["results"] == [[]]


def test_more_merging_masks_on_screen_than_the_limit_are_422(tmp_path):
    app, segmenters, _ = make_app(tmp_path, max_screen_masks=3)
    client = app.test_client()
    client.post("/setup", json=setup_body(MERGE))
    drafts = [{"result": [brush(region_id=f"b{i}") for i in range(4)]}]
    response = client.post("/predict", json=interactive_body([rectangle(10, 10, 50, 50)], task(drafts=drafts)))
    assert response.status_code == 422 and "MAX_SCREEN_MASKS" in response.get_json()["error"]
    drafts = [{"result": [brush(region_id=f"b{i}") for i in range(3)]}]
    assert client.post("/predict", json=interactive_body([rectangle(10, 10, 50, 50)], task(drafts=drafts))) \
        .status_code == 200


def test_label_configs_are_parsed_once_per_content(client, monkeypatch):
    calls = []
    original = backend.model.LabelingConfig.parse
    monkeypatch.setattr(backend.model.LabelingConfig, "parse",
                        staticmethod(lambda xml, prefix: calls.append(1) or original(xml, prefix)))
    backend.model.parse_label_config.cache_clear()
    for _ in range(3):
        assert client.post("/predict", json=interactive_body([rectangle(10, 10, 50, 50)])).status_code == 200
    assert len(calls) == 1
    other = CONFIG.replace("<View>", "<View>\n")
    client.post("/predict", json={**interactive_body([rectangle(10, 10, 50, 50)]), "label_config": other})
    assert len(calls) == 2


# --- finding 7: START_TRAINING needs the connection's Basic Auth --------------------------------


def test_start_training_without_basic_auth_starts_nothing(tmp_path):
    from backend.components import Components
    from backend.app import create_app
    from backend.segmenter_set import SegmenterSet
    from backend.settings import Settings

    class Recording:
        submitted = []

        def submit(self, job):
            self.submitted.append(job)

        def poll(self):
            pass

    settings = Settings(model_dir=tmp_path, basic_auth_user="ls", basic_auth_pass="pw")
    executor = Recording()
    learning = Components(settings, segmenters=SegmenterSet(), images=object(), executor=executor)
    connect(settings, 5)
    client = create_app(components=learning).test_client()
    event = {"action": "START_TRAINING", "project": {"id": 5, "token": "t"}}
    wrong = "Basic " + base64.b64encode(b"ls:nope").decode()
    for headers in ({}, {"Authorization": wrong}):
        response = client.post("/webhook", json=event, headers=headers)
        assert response.status_code == 401 and "WWW-Authenticate" in response.headers
    assert executor.submitted == [] and learning.jobs.list() == [] and not learning.retraining.pending.projects_with_changes()
    annotation = {"action": "ANNOTATION_CREATED", "project": {"id": 5},
                  "annotation": {"id": 1, "task": 1, "result": []}}
    assert client.post("/webhook", json=annotation).status_code == 200  # events stay open
    right = "Basic " + base64.b64encode(b"ls:pw").decode()
    answer = client.post("/webhook", json=event, headers={"Authorization": right})
    assert answer.status_code == 200 and answer.get_json()["job"] == executor.submitted[0].id
