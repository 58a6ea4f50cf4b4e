"""Label Studio's REST API as the browser uses it: a logged-in session with the CSRF header.

Tests call the same endpoints the UI's buttons call, so a session cookie is the natural
credential; the backend under test uses the Personal Access Token instead (see ls_server.py).
"""

from __future__ import annotations

from typing import Any

import requests


class LabelStudioApiError(RuntimeError):
    """A non-2xx answer; the message carries the method, path, status and Label Studio's body."""


class LabelStudioApi:
    def __init__(self, base_url: str, email: str, password: str):
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        self._session.get(f"{self.base_url}/user/login/", timeout=30).raise_for_status()  # sets the csrftoken cookie
        csrf = self._session.cookies["csrftoken"]
        login = self._session.post(
            f"{self.base_url}/user/login/",
            data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
            allow_redirects=False,
            timeout=30,
        )
        if login.status_code != 302:  # Django re-renders the form (200) when the login fails
            raise LabelStudioApiError(f"login as {email} failed: HTTP {login.status_code}")
        self._session.headers["X-CSRFToken"] = self._session.cookies["csrftoken"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``path`` relative to the server root (e.g. "/api/projects/"); returns the decoded JSON
        body, or None for an empty one."""
        kwargs.setdefault("timeout", 300)
        response = self._session.request(method, f"{self.base_url}{path}", **kwargs)
        if not response.ok:
            raise LabelStudioApiError(f"{method} {path} -> HTTP {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", path, **kwargs)
