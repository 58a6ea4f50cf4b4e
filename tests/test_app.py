"""Routes other than /predict: health, setup (and its persistence across workers), versions,
webhook for every Label Studio action, Basic Auth, error answers, and logging without secrets."""

import base64
import json
import logging
import time
from dataclasses import replace

import pytest

from backend.project_store import ProjectStore
from backend.protocol import mask_from_region
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings
from segmentation_fakes import CONFIG, PROJECT, make_app, predict_body, rectangle, setup_body, task


@pytest.fixture
def client(tmp_path):
    app, _, _ = make_app(tmp_path)
    return app.test_client()


def test_health_reports_loaded_segmenters_and_missing_sam(tmp_path):
    app, _, _ = make_app(tmp_path, sam=False)
    started = time.perf_counter()
    response = app.test_client().get("/health")
    assert time.perf_counter() - started < 0.5
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "UP" and body["model_class"] == "SegmentationModel"
    assert body["loaded"] == ["extreme"]
    assert body["sam"].startswith("missing: set SAM_CHECKPOINT")
    assert "python -m backend download-sam sam2.1_hiera_tiny" in body["sam"]
    assert body["extreme"] == "loaded (v1)"


def test_segmenters_that_are_missing_or_broken_are_reported_not_fatal(tmp_path):
    broken = tmp_path / "sam.pth"
    broken.write_bytes(b"not a checkpoint")
    absent = tmp_path / "none.pth"
    for checkpoint, status in ((None, "missing: set SAM_CHECKPOINT"),
                               (absent, f"missing: SAM_CHECKPOINT {absent} does not exist"),
                               (broken, f"failed to load {broken}")):
        settings = replace(Settings(), sam_checkpoint=checkpoint, extreme_weights=tmp_path, model_dir=tmp_path / "var")
        segmenters = SegmenterSet.load(settings)
        assert segmenters.loaded == [] and segmenters.status["sam"].startswith(status)
        assert not settings.model_dir.exists()  # no embedding store for a SAM that did not load
        assert segmenters.status["extreme"].startswith(f"missing: no {tmp_path / 'manifest.json'}")


def test_setup_returns_the_model_version_and_stores_the_project(client, tmp_path):
    response = client.post("/setup", json=setup_body({"policies": {"*": {"fill_holes": True}}}))
    assert response.status_code == 200
    version = response.get_json()["model_version"]
    assert version == "segassist-v1+sam-fake"
    stored = ProjectStore(tmp_path / "projects").load("7")
    assert stored.label_config == CONFIG and stored.model_version == version
    assert stored.extra_params == {"policies": {"*": {"fill_holes": True}}}
    assert client.get("/versions").get_json()["versions"] == [version]


def test_setup_is_visible_to_another_worker_and_after_a_restart(tmp_path):
    first, _, _ = make_app(tmp_path)
    first.test_client().post("/setup", json=setup_body({"policies": {"Car": {"dilate_px": 3}}}))
    second, _, _ = make_app(tmp_path)  # another gunicorn worker / a restarted server: same MODEL_DIR
    body = predict_body([task()], context=[rectangle(50, 20, 100, 60)], label_config=None)
    region = second.test_client().post("/predict", json=body).get_json()["results"][0]["result"][0]
    mask = mask_from_region(region, 200, 100)
    rows, cols = mask.any(axis=1).nonzero()[0], mask.any(axis=0).nonzero()[0]
    assert (rows[0], rows[-1], cols[0], cols[-1]) == (17, 62, 47, 102)  # the 50 x 40 box grown by 3 px


def test_setup_accepts_null_and_json_string_extra_params(client):
    assert client.post("/setup", json=setup_body(None)).status_code == 200
    assert client.post("/setup", json=setup_body('{"policies": {"Dog": {"keep_largest": true}}}')).status_code == 200


@pytest.mark.parametrize("body, status, message", [
    (setup_body(schema="<View><Image name='i' value='$i'/></View>"), 422, "no <BrushLabels> or <PolygonLabels> control"),
    (setup_body(schema="<View"), 422, "not valid XML"),
    (setup_body({"policies": {"*": {"fill_holes": "yes"}}}), 422, "fill_holes must be"),
    (setup_body({"policies": {"Cat": {"fill_holes": True}}}), 422, "policies for unknown label(s) Cat"),
    (setup_body({"polices": {}}), 422, 'unknown key "polices" (did you mean "policies"?)'),
    (setup_body("{not json"), 422, "extra params: not valid JSON"),
    (dict(setup_body(), project="abc"), 400, "project must be"),
    (dict(setup_body(), project=None), 400, "project must be"),
    ({"project": PROJECT}, 400, '/setup needs "schema"'),
])
def test_setup_errors_are_clear_and_shown_in_the_reason_phrase(client, tmp_path, body, status, message):
    response = client.post("/setup", json=body)
    assert response.status_code == status
    assert message in response.get_json()["error"]
    # Label Studio shows "<code> Client Error: <reason> for url: …", possibly as HTML: no angle brackets.
    assert message.replace("<", "").replace(">", "") in response.status
    assert not (tmp_path / "projects").exists()


def test_setup_is_fast_and_loads_nothing(client):
    started = time.perf_counter()
    assert client.post("/setup", json=setup_body()).status_code == 200
    assert time.perf_counter() - started < 1.0


def test_non_json_bodies_are_400(client):
    for path in ("/setup", "/predict", "/webhook"):
        response = client.post(path, data="not json", content_type="application/json")
        assert response.status_code == 400
        assert response.get_json() == {"error": "the request body must be a JSON object"}


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/nope").status_code == 404
    assert "error" in client.get("/nope").get_json()
    assert client.get("/predict").status_code == 405


SECRET_PROJECT = {"id": 7, "title": "p", "token": "webhook-token-xyz", "task_data_password": "pw-123"}
EVENTS = [
    ("ANNOTATION_CREATED", {"annotation": {"id": 11, "task": 3, "result": [], "was_cancelled": False},
                            "task": {"id": 3, "data": {}}, "project": SECRET_PROJECT}, [11], [3]),
    ("ANNOTATION_UPDATED", {"annotation": {"id": 11, "task": 3, "result": []}, "task": {"id": 3},
                            "project": SECRET_PROJECT}, [11], [3]),
    ("ANNOTATIONS_CREATED", {"annotation": [{"id": 12, "task": 4}, {"id": 13, "task": 5}],
                             "task": [{"id": 4}, {"id": 5}], "project": SECRET_PROJECT}, [12, 13], [4, 5]),
    ("ANNOTATIONS_DELETED", {"annotations": [{"id": 11}, {"id": 12}], "project": SECRET_PROJECT}, [11, 12], []),
    ("TASKS_CREATED", {"tasks": [{"id": 8, "data": {}}], "project": SECRET_PROJECT}, [], [8]),
    ("TASKS_DELETED", {"tasks": [{"id": 8}], "project": SECRET_PROJECT}, [], [8]),
    ("PROJECT_UPDATED", {"project": SECRET_PROJECT}, [], []),
    ("START_TRAINING", {"project": SECRET_PROJECT}, [], []),
    ("SOMETHING_NEW", {"project": SECRET_PROJECT, "thing": {"id": 1}}, [], []),
]


def test_webhook_accepts_and_records_every_action_without_secrets(client, tmp_path):
    for action, payload, annotation_ids, task_ids in EVENTS:
        started = time.perf_counter()
        response = client.post("/webhook", json={"action": action, **payload})
        assert time.perf_counter() - started < 0.5
        assert response.status_code == 200 and response.get_json()["status"] == "ok"
    log_text = (tmp_path / "events.jsonl").read_text()
    records = [json.loads(line) for line in log_text.splitlines()]
    assert [r["action"] for r in records] == [e[0] for e in EVENTS]
    assert [(r["annotation_ids"], r["task_ids"]) for r in records] == [(e[2], e[3]) for e in EVENTS]
    assert all(r["project"] == 7 and r["time"] > 0 for r in records)
    assert "webhook-token-xyz" not in log_text and "pw-123" not in log_text


def test_webhook_without_action_is_400(client):
    response = client.post("/webhook", json={"project": SECRET_PROJECT})
    assert response.status_code == 400 and "action" in response.get_json()["error"]


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_guards_every_route_but_the_event_webhook(tmp_path):
    app, _, _ = make_app(tmp_path, basic_auth_user="ls", basic_auth_pass="pa:ss")
    client = app.test_client()
    for method, path in (("get", "/health"), ("post", "/setup"), ("post", "/predict"), ("get", "/versions")):
        anonymous = getattr(client, method)(path, json={})
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert getattr(client, method)(path, json={}, headers=basic("ls", "wrong")).status_code == 401
        assert getattr(client, method)(path, json={}, headers=basic("LS", "pa:ss")).status_code == 401
    assert client.get("/health", headers=basic("ls", "pa:ss")).status_code == 200
    assert client.post("/setup", json=setup_body(), headers=basic("ls", "pa:ss")).status_code == 200
    action, payload, _, _ = EVENTS[0]
    assert client.post("/webhook", json={"action": action, **payload}).status_code == 200


def test_webhook_can_require_auth(tmp_path):
    app, _, _ = make_app(tmp_path, basic_auth_user="ls", basic_auth_pass="pw", webhook_requires_auth=True)
    client = app.test_client()
    event = {"action": "PROJECT_UPDATED", "project": {"id": 7}}
    assert client.post("/webhook", json=event).status_code == 401
    assert client.post("/webhook", json=event, headers=basic("ls", "pw")).status_code == 200


def test_auth_off_when_not_configured(client):
    assert client.get("/health").status_code == 200


def test_one_log_line_per_request_with_timing_and_no_secrets(client, caplog):
    caplog.set_level(logging.INFO)
    client.post("/setup", json=setup_body())
    client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": SECRET_PROJECT})
    client.post("/predict", json=predict_body([]))
    lines = [r.getMessage() for r in caplog.records if r.name == "backend.app"]
    assert len(lines) == 3
    assert lines[0].startswith("POST /setup 200 ") and " ms" in lines[0]
    assert "action=PROJECT_UPDATED" in lines[1]
    assert "tasks=0" in lines[2]
    everything = caplog.text
    for secret in ("legacy-token-abc123", "webhook-token-xyz", "pw-123", "s3cret-data-password"):
        assert secret not in everything
