"""LabelStudioAuth: PAT -> JWT refresh, headers only for the Label Studio origin, legacy tokens."""

import base64
import json
import threading
import time

import pytest

from backend.ls_auth import LabelStudioAuth, LabelStudioAuthError

LS = "http://ls.example:8080"
REFRESH = f"{LS}/api/token/refresh/"


def make_jwt(claims: dict) -> str:
    def segment(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(claims)}.c2lnbmF0dXJl"


PAT = make_jwt({"token_type": "refresh", "jti": "pat-1"})


def access_token(n: int, lifetime_s: int = 300, issued: int = 1_000_000) -> str:
    # iat/exp on a far-off clock: the lifetime must come from exp - iat, not from exp alone.
    return make_jwt({"token_type": "access", "n": n, "iat": issued, "exp": issued + lifetime_s})


def test_pat_is_exchanged_for_a_bearer_jwt_sent_only_to_the_label_studio_origin(requests_mock):
    requests_mock.post(REFRESH, json={"access": access_token(1)})
    auth = LabelStudioAuth(LS + "/", PAT)

    assert auth.headers_for(f"{LS}/data/upload/1/cat.jpg") == {"Authorization": f"Bearer {access_token(1)}"}
    assert requests_mock.last_request.json() == {"refresh": PAT}
    for foreign in (
        "https://bucket.s3.amazonaws.com/cat.jpg?X-Amz-Signature=abc",
        "http://ls.example:9090/data/upload/1/cat.jpg",  # other port
        "https://ls.example:8080/data/upload/1/cat.jpg",  # other scheme
        "http://evil.example/?u=http://ls.example:8080/",
    ):
        assert auth.headers_for(foreign) == {}, foreign


def test_default_ports_are_the_same_origin():
    auth = LabelStudioAuth("https://ls.example", "0123456789abcdef0123456789abcdef01234567")
    assert auth.is_label_studio_url("https://LS.example:443/data/upload/x.png")
    assert not auth.is_label_studio_url("http://ls.example/data/upload/x.png")


def test_access_token_is_reused_then_refreshed_before_expiry(requests_mock, monkeypatch):
    tokens = iter([access_token(1), access_token(2)])
    requests_mock.post(REFRESH, json=lambda request, context: {"access": next(tokens)})
    now = [5000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    auth = LabelStudioAuth(LS, PAT)

    first = auth.headers_for(f"{LS}/data/upload/a.png")
    now[0] += 200  # well inside the 300 s lifetime
    assert auth.headers_for(f"{LS}/data/upload/b.png") == first
    assert requests_mock.call_count == 1
    now[0] += 80  # within the refresh margin before expiry
    assert auth.headers_for(f"{LS}/data/upload/c.png") == {"Authorization": f"Bearer {access_token(2)}"}
    assert requests_mock.call_count == 2


def test_concurrent_callers_share_one_refresh(requests_mock):
    requests_mock.post(REFRESH, json={"access": access_token(1)})
    auth = LabelStudioAuth(LS, PAT)
    results = []
    threads = [threading.Thread(target=lambda: results.append(auth.headers_for(LS + "/x"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert requests_mock.call_count == 1
    assert len(results) == 8 and all(r == results[0] for r in results)


def test_rejected_pat_gives_a_clear_error_without_the_secret(requests_mock):
    requests_mock.post(REFRESH, status_code=401, json={"detail": "Token is invalid or expired"})
    auth = LabelStudioAuth(LS, PAT)
    with pytest.raises(LabelStudioAuthError) as error:
        auth.headers_for(LS + "/data/upload/a.png")
    message = str(error.value)
    assert "401" in message and "Personal Access Token" in message
    assert PAT not in message and PAT not in repr(auth)


def test_unreachable_label_studio_is_reported(requests_mock):
    import requests

    requests_mock.post(REFRESH, exc=requests.ConnectionError("refused"))
    with pytest.raises(LabelStudioAuthError, match="LABEL_STUDIO_URL"):
        LabelStudioAuth(LS, PAT).headers_for(LS + "/x")


def test_answer_without_access_token_is_an_error(requests_mock):
    requests_mock.post(REFRESH, json={"detail": "nope"})
    with pytest.raises(LabelStudioAuthError, match="without an access token") as error:
        LabelStudioAuth(LS, PAT).headers_for(LS + "/x")
    assert error.value.transient and not error.value.refused  # not a verdict on the key: tried again later


def test_legacy_token_is_sent_as_token_scheme_without_refresh(requests_mock):
    legacy = "0123456789abcdef0123456789abcdef01234567"
    auth = LabelStudioAuth(LS, legacy)
    assert auth.headers_for(LS + "/data/upload/a.png") == {"Authorization": f"Token {legacy}"}
    assert auth.headers_for("https://elsewhere.example/a.png") == {}
    assert requests_mock.call_count == 0


def test_from_settings_needs_url_and_key():
    from backend.settings import Settings

    assert LabelStudioAuth.from_settings(Settings(label_studio_url=LS)) is None
    assert LabelStudioAuth.from_settings(Settings(label_studio_api_key=PAT)) is None
    auth = LabelStudioAuth.from_settings(Settings(label_studio_url=LS, label_studio_api_key=PAT))
    assert auth is not None and auth.is_label_studio_url(LS + "/x")
