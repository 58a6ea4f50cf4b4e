"""The one Label Studio client: retries of 429/503 after Retry-After or a jittered backoff, all within
the call's deadline; failures classified (transient, the token, this call) with safe messages."""

from __future__ import annotations

import email.utils
import time

import pytest
import requests

from backend.label_studio_client import (
    LabelStudioAuthRefused,
    LabelStudioClient,
    LabelStudioError,
    LabelStudioRefused,
    LabelStudioUnavailable,
    RetryPolicy,
    retry_after_s,
)
from backend.ls_auth import LabelStudioAuth
from backend.settings import Settings
from local_http import LocalServer, trickle_headers

LS = "http://ls.test:8080"
KEY = "0123456789abcdef0123456789abcdef01234567"  # a legacy token: sent as "Token …"
TASKS = {"tasks": [{"id": 4, "data": {}}], "total": 1}


def client(timeout_s: float = 5.0, **retry) -> LabelStudioClient:
    return LabelStudioClient(LS, LabelStudioAuth(LS, KEY), RetryPolicy(**retry), timeout_s=timeout_s)


def test_429_with_retry_after_is_waited_out_then_answered(requests_mock):
    requests_mock.get(f"{LS}/api/tasks/", [{"status_code": 429, "headers": {"Retry-After": "1"}}, {"json": TASKS}])
    started = time.monotonic()
    assert client().tasks_page("3", 1) == ([{"id": 4, "data": {}}], 1)
    assert 1.0 <= time.monotonic() - started < 2.0 and requests_mock.call_count == 2
    assert all(r.headers["Authorization"] == f"Token {KEY}" for r in requests_mock.request_history)


def test_503_without_retry_after_backs_off_and_tries_again(requests_mock):
    requests_mock.get(f"{LS}/api/tasks/", [{"status_code": 503}, {"status_code": 503}, {"json": TASKS}])
    assert client(base_s=0.01, cap_s=0.02).tasks_page("3", 1)[0][0]["id"] == 4
    assert requests_mock.call_count == 3


def test_a_wait_past_the_deadline_is_not_taken(requests_mock):
    requests_mock.get(f"{LS}/api/tasks/", status_code=429, headers={"Retry-After": "30"})
    started = time.monotonic()
    with pytest.raises(LabelStudioUnavailable, match="HTTP 429 while listing project 3's tasks"):
        client(timeout_s=2.0).tasks_page("3", 1)
    assert time.monotonic() - started < 0.5 and requests_mock.call_count == 1


def test_retries_stop_after_the_policy_s_tries(requests_mock):
    requests_mock.get(f"{LS}/api/tasks/", status_code=503, headers={"Retry-After": "0"})
    with pytest.raises(LabelStudioUnavailable, match="HTTP 503") as error:
        client(tries=3).tasks_page("3", 1)
    assert requests_mock.call_count == 3 and error.value.transient


def test_one_deadline_covers_every_try_and_a_trickling_answer():
    server = LocalServer()
    server.routes["/api/tasks/"] = trickle_headers(0.02)
    try:
        slow = LabelStudioClient(server.url, LabelStudioAuth(server.url, KEY), timeout_s=0.4)
        started = time.monotonic()
        with pytest.raises(LabelStudioUnavailable, match="could not be reached while listing"):
            slow.tasks_page("3", 1)
        assert time.monotonic() - started < 1.0
    finally:
        server.close()


def test_retry_after_as_seconds_or_http_date():
    assert retry_after_s("7") == 7.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= retry_after_s(in_ten) <= 10.0
    assert retry_after_s(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


def test_backoff_without_retry_after_is_jittered_and_capped():
    policy = RetryPolicy(base_s=0.5, cap_s=2.0)
    no_header = requests.Response()
    waits = [policy.wait_s(attempt, no_header) for attempt in range(8) for _ in range(20)]
    assert all(0 <= wait <= 2.0 for wait in waits) and len(set(waits)) > 100
    assert max(policy.wait_s(0, no_header) for _ in range(50)) <= 0.5


@pytest.mark.parametrize("status, error, transient", [
    (400, LabelStudioRefused, False), (404, LabelStudioRefused, False), (401, LabelStudioAuthRefused, False),
    (403, LabelStudioAuthRefused, False), (500, LabelStudioUnavailable, True), (502, LabelStudioUnavailable, True),
])
def test_failures_are_classified_so_callers_can_act(requests_mock, status, error, transient):
    requests_mock.get(f"{LS}/api/tasks/9/", status_code=status, text=f"secret payload {KEY}")
    with pytest.raises(error) as raised:
        client().task(9)
    assert type(raised.value) is error and raised.value.transient is transient
    assert f"HTTP {status} while reading task 9" in str(raised.value)
    assert KEY not in str(raised.value) and "payload" not in str(raised.value)
    if error is not LabelStudioUnavailable:
        assert raised.value.status == status


def test_unreachable_label_studio_is_transient_and_named_without_secrets(requests_mock):
    requests_mock.get(f"{LS}/api/tasks/9/", exc=requests.ConnectionError("refused"))
    with pytest.raises(LabelStudioUnavailable, match="ls.test:8080 could not be reached while reading task 9 "
                                                     r"\(ConnectionError\)") as error:
        client().task(9)
    assert KEY not in str(error.value)


def test_a_refused_or_unreachable_token_refresh_is_classified(requests_mock):
    pat = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2ln"
    refreshing = LabelStudioClient(LS, LabelStudioAuth(LS, pat))
    requests_mock.post(f"{LS}/api/token/refresh/", status_code=401)
    with pytest.raises(LabelStudioAuthRefused, match="rejected LABEL_STUDIO_API_KEY") as error:
        refreshing.task(9)
    assert pat not in str(error.value)
    requests_mock.post(f"{LS}/api/token/refresh/", exc=requests.ConnectionError)
    with pytest.raises(LabelStudioUnavailable, match="could not reach Label Studio"):
        refreshing.task(9)


def test_a_redirect_is_not_followed_and_the_body_goes_nowhere_else(requests_mock):
    requests_mock.post(f"{LS}/api/predictions/", status_code=302, headers={"Location": "http://elsewhere/"})
    with pytest.raises(LabelStudioRefused, match="HTTP 302 while storing task 5's prediction"):
        client().create_prediction(5, {"result": [], "score": 0.5, "model_version": "v"})
    assert [r.url for r in requests_mock.request_history] == [f"{LS}/api/predictions/"]


def test_answers_that_are_not_what_was_asked_for_are_errors(requests_mock):
    requests_mock.get(f"{LS}/api/projects/3/", text="<html>login</html>")
    with pytest.raises(LabelStudioUnavailable, match="not valid JSON"):  # a proxy's page: tried again later
        client().label_config("3")
    requests_mock.get(f"{LS}/api/projects/3/", json={"id": 3})
    with pytest.raises(LabelStudioError, match="no label_config"):
        client().label_config("3")


def test_task_ids_page_through_the_project(requests_mock):
    pages = [{"json": {"tasks": [{"id": i, "is_labeled": i % 2 == 0} for i in range(p * 100 + 1, p * 100 + 101)],
                       "total": 250}} for p in range(2)] + [{"json": {"tasks": [{"id": 201}], "total": 250}}]
    requests_mock.get(f"{LS}/api/tasks/", pages)
    assert client().task_ids("3", unlabeled_only=True) == [i for i in range(1, 201) if i % 2] + [201]
    assert [r.qs["page"] for r in requests_mock.request_history] == [["1"], ["2"], ["3"]]
    assert requests_mock.request_history[0].qs["fields"] == ["task_only"]


def test_without_settings_calls_say_what_to_set():
    unset = LabelStudioClient.from_settings(Settings())
    assert not unset.configured
    with pytest.raises(LabelStudioAuthRefused, match="LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"):
        unset.task(1)
