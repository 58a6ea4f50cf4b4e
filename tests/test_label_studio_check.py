"""The ``label_studio`` field of /health: ok, refused token, unreachable, not a PAT, not
configured; checked in the background and cached, so /health never waits on Label Studio."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import requests

from backend.label_studio_check import CHECKING, NOT_CONFIGURED, OK, LabelStudioCheck
from backend.settings import Settings
from segmentation_fakes import make_app, setup_body
from test_ls_auth import PAT, access_token

LS = "http://ls.example:8080"
REFRESH = f"{LS}/api/token/refresh/"
WHOAMI = f"{LS}/api/current-user/whoami"


def check_for(api_key: str = PAT, url: str = LS, **kwargs) -> LabelStudioCheck:
    return LabelStudioCheck(replace(Settings(), label_studio_url=url, label_studio_api_key=api_key), **kwargs)


def test_ok_when_label_studio_accepts_the_personal_access_token(requests_mock):
    requests_mock.post(REFRESH, json={"access": access_token(1)})
    requests_mock.get(WHOAMI, json={"id": 1, "email": "me@example.com"})
    assert check_for().status(wait_s=5) == OK
    assert requests_mock.request_history[-1].headers["Authorization"] == f"Bearer {access_token(1)}"


@pytest.mark.parametrize("mock, expected", [
    (lambda m: m.post(REFRESH, status_code=401, json={"detail": "Token is invalid"}),
     "Label Studio rejected LABEL_STUDIO_API_KEY (HTTP 401"),
    (lambda m: m.post(REFRESH, exc=requests.ConnectionError("refused")),
     f"could not reach Label Studio at {LS}"),
    (lambda m: (m.post(REFRESH, json={"access": access_token(1)}), m.get(WHOAMI, status_code=401)),
     "Label Studio refused the access token (HTTP 401"),
    (lambda m: (m.post(REFRESH, json={"access": access_token(1)}), m.get(WHOAMI, status_code=404, text="nope")),
     "answered HTTP 404, not Label Studio's current user: check LABEL_STUDIO_URL"),
])
def test_errors_say_what_to_fix_and_never_show_the_token(requests_mock, mock, expected):
    mock(requests_mock)
    answer = check_for().status(wait_s=5)
    assert answer.startswith("error: ") and expected in answer, answer
    assert PAT not in answer and access_token(1) not in answer


def test_a_key_that_is_not_a_personal_access_token_is_named_as_such(requests_mock):
    requests_mock.get(WHOAMI, status_code=401)
    answer = check_for(api_key="0123456789abcdef").status(wait_s=5)
    assert answer.startswith("error: LABEL_STUDIO_API_KEY is not a Personal Access Token")
    assert "Account & Settings -> Personal Access Token" in answer and "0123456789abcdef" not in answer


def test_unreachable_label_studio(requests_mock):
    requests_mock.get(WHOAMI, exc=requests.ConnectTimeout("timed out"))
    answer = check_for(api_key="legacy-key").status(wait_s=5)
    assert answer.startswith(f"error: Label Studio at {LS} is unreachable (ConnectTimeout)")


def test_not_configured_without_a_url_and_an_error_without_a_key():
    assert check_for(url="").status() == NOT_CONFIGURED
    assert check_for(api_key="").status(wait_s=5).startswith("error: LABEL_STUDIO_API_KEY is not set")


def test_answers_are_cached_and_rechecked_in_the_background(requests_mock):
    requests_mock.post(REFRESH, json={"access": access_token(1, lifetime_s=3600)})
    requests_mock.get(WHOAMI, json={"id": 1})
    now = [0.0]
    check = check_for(interval_s=30, clock=lambda: now[0])
    assert check.status(wait_s=5) == OK
    calls = requests_mock.call_count
    now[0] = 29.0
    assert check.status() == OK and requests_mock.call_count == calls  # cached
    requests_mock.get(WHOAMI, status_code=401)
    now[0] = 31.0
    assert check.status() == OK  # the stale answer, while the new check runs
    deadline = time.monotonic() + 5
    while check.status().startswith("ok") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert check.status().startswith("error: Label Studio refused the access token")


def test_health_answers_at_once_while_label_studio_hangs(tmp_path, requests_mock):
    release = threading.Event()

    def hang(request, context):
        release.wait(10)
        return {"id": 1}

    requests_mock.get(WHOAMI, json=hang)
    app, _, _ = make_app(tmp_path, label_studio_url=LS, label_studio_api_key="legacy-key")
    client = app.test_client()
    try:
        for _ in range(3):
            started = time.perf_counter()
            response = client.get("/health")
            assert time.perf_counter() - started < 0.9
            assert response.get_json()["label_studio"] == CHECKING
        assert requests_mock.call_count == 1, "one check at a time"
    finally:
        release.set()


def test_health_reports_not_configured_without_label_studio_url(tmp_path):
    app, _, _ = make_app(tmp_path)
    assert app.test_client().get("/health").get_json()["label_studio"] == NOT_CONFIGURED


def test_a_redirect_is_not_followed_with_the_token(requests_mock):
    requests_mock.get(WHOAMI, status_code=302, headers={"Location": "http://elsewhere.example/whoami"})
    requests_mock.get("http://elsewhere.example/whoami", json={"id": 1})
    legacy = "0123456789abcdef0123456789abcdef01234567"
    answer = check_for(api_key=legacy).check()
    assert "answered HTTP 302" in answer and legacy not in answer
    assert [r.url for r in requests_mock.request_history] == [WHOAMI]


def setup_answer(tmp_path, api_key: str = PAT):
    app, _, _ = make_app(tmp_path, label_studio_url=LS, label_studio_api_key=api_key)
    started = time.perf_counter()
    response = app.test_client().post("/setup", json=setup_body(), auth=("", ""))
    return response, time.perf_counter() - started


@pytest.mark.parametrize("mock, reason", [
    (lambda m: (m.post(REFRESH, json={"access": access_token(1)}), m.get(WHOAMI, status_code=403)),
     "Label Studio refused the access token (HTTP 403 on /api/current-user/whoami)"),
    (lambda m: m.post(REFRESH, status_code=401, json={"detail": "Token is blacklisted"}),
     "Label Studio rejected LABEL_STUDIO_API_KEY (HTTP 401 from /api/token/refresh/)"),
])
def test_setup_fails_with_the_reason_when_label_studio_refuses_the_token(tmp_path, requests_mock, mock, reason):
    mock(requests_mock)
    response, elapsed_s = setup_answer(tmp_path)
    assert response.status_code == 424 and elapsed_s < 1.0
    # Label Studio's Connect model dialog shows the HTTP reason phrase (app.error_response).
    phrase = response.status.split(" ", 1)[1]
    assert phrase.startswith(reason) and "LABEL_STUDIO_API_KEY" in phrase
    assert PAT not in response.status and PAT not in response.get_data(as_text=True)


@pytest.mark.parametrize("mock", [
    lambda m: m.post(REFRESH, exc=requests.ConnectionError("refused")),
    lambda m: (m.post(REFRESH, json={"access": access_token(1)}), m.get(WHOAMI, status_code=502)),
    lambda m: (m.post(REFRESH, json={"access": access_token(1)}), m.get(WHOAMI, json={"id": 1})),
])
def test_setup_connects_when_label_studio_accepts_the_token_or_cannot_say(tmp_path, requests_mock, mock, caplog):
    mock(requests_mock)
    response, _ = setup_answer(tmp_path)
    assert response.status_code == 200 and response.get_json()["model_version"]


def test_setup_does_not_wait_for_a_hanging_label_studio(tmp_path, requests_mock):
    release = threading.Event()

    def hang(request, context):
        release.wait(10)
        return {"access": access_token(1)}

    requests_mock.post(REFRESH, json=hang)
    requests_mock.get(WHOAMI, json={"id": 1})
    try:
        response, elapsed_s = setup_answer(tmp_path)
        assert response.status_code == 200 and elapsed_s < 1.5
    finally:
        release.set()
        time.sleep(0.2)  # the check ends while Label Studio is still mocked


def test_setup_without_label_studio_configured_connects(tmp_path):
    app, _, _ = make_app(tmp_path)
    assert app.test_client().post("/setup", json=setup_body()).status_code == 200
