"""The Label Studio calls of a pre-annotation job, through ``backend.label_studio_client`` over a mock
HTTP transport: paths, query parameters and bodies as Label Studio 1.23 receives them."""

from __future__ import annotations

import pytest
from requests_mock import create_response

from backend.active_learning.ls_data import ProjectDataError
from backend.label_studio_client import LabelStudioRefused
from backend.preannotation.ls_tasks import LabelStudioTasks
from backend.request_shapes import check_task
from backend.settings import Settings

KEY = "legacy-test-key-123"
RECTANGLE = {"id": "r1", "from_name": "box", "to_name": "image", "type": "rectanglelabels", "original_width": 200,
             "original_height": 100, "image_rotation": 0,
             "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0, "rectanglelabels": ["Car"]}}
TASKS = [{"id": i, "data": {"image": f"/data/upload/7/{i}.png"}, "project": 7, "is_labeled": i % 3 == 0,
          "total_annotations": int(i % 3 == 0)} for i in range(1, 151)]


class FakeServer:
    """Label Studio's answers to the calls a job makes (a requests_mock matcher)."""

    def __init__(self):
        self.requests: list = []
        self.stored: list[dict] = []

    def __call__(self, request):
        self.requests.append(request)
        assert request.headers["Authorization"] == f"Token {KEY}"
        path, params = request.path, {key: values[0] for key, values in request.qs.items()}
        if path == "/api/tasks/" and request.method == "GET":
            page, size = int(params["page"]), int(params["page_size"])
            assert params["project"] == "7"
            tasks = TASKS[(page - 1) * size:page * size]
            if not tasks:
                return create_response(request, status_code=404, json={"detail": "Invalid page."})
            return create_response(request, json={"tasks": tasks, "total": len(TASKS), "total_annotations": 50,
                                                  "total_predictions": 0})
        if path == "/api/tasks/5/":
            return create_response(request, json={
                **TASKS[4], "annotations": [], "created_at": "2026-12-01T21:53:13.123456Z", "predictions": [
                    {"id": 9, "model_version": "detector", "result": [RECTANGLE], "score": 0.5, "task": 5,
                     "created_at": "2026-12-01T21:53:13.123456Z", "updated_at": "2026-12-01T21:53:13.123456Z"}]})
        if path == "/api/tasks/6/":  # a serializer without predictions: they are asked for
            return create_response(request, json={**TASKS[5], "annotations": []})
        if path == "/api/predictions/" and request.method == "GET":
            assert params in ({"task": "6"}, {"task": "5"})
            return create_response(request, json=[{"id": 3, "model_version": "x", "result": [], "task": int(params["task"])}])
        if path == "/api/predictions/" and request.method == "POST":
            self.stored.append(request.json())
            return create_response(request, status_code=201, json={"id": 77, **self.stored[-1]})
        if path == "/api/predictions/77/" and request.method == "DELETE":
            return create_response(request, status_code=204)
        if path == "/api/predictions/78/" and request.method == "DELETE":
            return create_response(request, status_code=400, json={"detail": "refused"})
        return create_response(request, status_code=404, json={"detail": "Not found."})


@pytest.fixture
def server_and_api(requests_mock):
    server = FakeServer()
    requests_mock.add_matcher(server)
    settings = Settings(label_studio_url="http://ls.test:8080", label_studio_api_key=KEY)
    return server, LabelStudioTasks(settings)


def test_task_ids_read_every_page_and_can_leave_labeled_tasks_out(server_and_api):
    server, api = server_and_api
    assert api.task_ids("7") == list(range(1, 151))
    assert api.task_ids("7", unlabeled_only=True) == [i for i in range(1, 151) if i % 3]
    assert [r.qs["page"] for r in server.requests] == [["1"], ["2"], ["1"], ["2"]]


def test_a_task_comes_as_label_studio_sent_it_and_passes_the_batch_paths_checks(server_and_api):
    _, api = server_and_api
    task = api.task(5)
    assert task["id"] == 5 and task["project"] == 7 and task["data"] == {"image": "/data/upload/7/5.png"}
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "detector" and prediction["result"] == [RECTANGLE]
    assert prediction["created_at"] == "2026-12-01T21:53:13.123456Z"  # a string, as on the wire
    check_task(task, "task")
    assert api.task(6)["predictions"] == [{"id": 3, "model_version": "x", "result": [], "task": 6}]


def test_predictions_are_posted_with_task_result_score_and_model_version(server_and_api):
    server, api = server_and_api
    result = [{"type": "brushlabels", "from_name": "mask", "to_name": "image", "value": {"format": "rle", "rle": [1]}}]
    assert api.create_prediction(5, {"result": result, "score": 0.8, "model_version": "segassist-v1+nosam"}) == 77
    assert server.stored == [{"task": 5, "result": result, "score": 0.8, "model_version": "segassist-v1+nosam"}]
    assert api.delete_prediction(77) is True
    assert server.requests[-1].method == "DELETE" and server.requests[-1].path == "/api/predictions/77/"


def test_a_prediction_already_gone_is_no_failure_to_delete_but_other_refusals_are(server_and_api):
    _, api = server_and_api
    assert api.delete_prediction(76) is False  # Label Studio: 404, deleted meanwhile
    with pytest.raises(LabelStudioRefused, match="HTTP 400 while deleting prediction 78"):
        api.delete_prediction(78)


def test_a_tasks_predictions_are_read_as_label_studio_holds_them_now(server_and_api):
    server, api = server_and_api
    (prediction,) = api.predictions(5)
    assert prediction["id"] == 3 and prediction["task"] == 5
    assert server.requests[-1].path == "/api/predictions/"


def test_failures_say_what_failed_without_the_key(server_and_api):
    _, api = server_and_api
    with pytest.raises(ProjectDataError) as error:
        api.task(404)
    assert "HTTP 404 while reading task 404" in str(error.value) and KEY not in str(error.value)
    assert isinstance(error.value, LabelStudioRefused) and error.value.status == 404  # about this task


def test_without_label_studio_settings_the_job_says_what_to_set():
    with pytest.raises(ProjectDataError, match="LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"):
        LabelStudioTasks(Settings())
