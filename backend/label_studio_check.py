"""Whether Label Studio accepts the backend's token: the ``label_studio`` field of ``/health``.

The answer is ``"ok"``, ``"not configured"`` (no ``LABEL_STUDIO_URL``), or a message starting with
``"error"`` that says what to fix (Label Studio unreachable, the token refused, a key that is not a
Personal Access Token). It comes from a background thread and is cached for ``interval_s``, because
Label Studio gives ``/health`` 1 s and may itself be slow or down: a request never waits on Label
Studio longer than ``wait_s``, and only one that starts the first check waits at all. Messages never contain
the token.

``refusal`` is the same answer for ``/setup``: the reason when Label Studio refused the token (HTTP
401/403, or the Personal Access Token's refresh refused), else None (accepted, unreachable, not
configured, still checking), so a refused token fails the *Connect model* dialog with that reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from backend.label_studio_client import LabelStudioClient
from backend.ls_auth import PAT_HINT, LabelStudioAuthError
from backend.process_thread import ProcessThread
from backend.urls import redact

OK = "ok"
NOT_CONFIGURED = "not configured"
CHECKING = "checking: Label Studio has not answered yet"
WHOAMI_PATH = "/api/current-user/whoami"


class LabelStudioCheck:
    """The cached answer for ``settings.label_studio_url`` / ``label_studio_api_key``. Thread- and
    fork-safe: each process runs its own checks."""

    def __init__(self, settings, interval_s: float = 30.0, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.url = settings.label_studio_url
        self._client = LabelStudioClient.from_settings(settings, timeout_s=timeout_s)
        self._auth = self._client.auth
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._answer: str | None = None
        self._refused = False  # whether the answer is Label Studio refusing the token
        self._checked_at = float("-inf")
        self._checker = ProcessThread(self._refresh, "label-studio-check")

    def status(self, wait_s: float = 0.5) -> str:
        """The latest answer; starts a new check in the background when it is older than ``interval_s``."""
        if not self.url:
            return NOT_CONFIGURED
        with self._lock:
            due = self._clock() - self._checked_at >= self._interval_s
            started = due and self._checker.ensure_running()
            answer = self._answer
        if answer is None and started:
            self._checker.join(wait_s)
        return self._answer or CHECKING

    def refusal(self, wait_s: float = 0.5) -> str | None:
        """Why Label Studio refuses the token (the cached answer, as ``status``), or None."""
        answer = self.status(wait_s)
        with self._lock:
            return answer.removeprefix("error: ") if self._refused and answer == self._answer else None

    def _refresh(self) -> None:
        answer, refused = self._ask()
        with self._lock:
            self._answer, self._refused, self._checked_at = answer, refused, self._clock()

    def check(self) -> str:
        """Ask Label Studio now (blocking): who the token belongs to."""
        return self._ask()[0]

    def _ask(self) -> tuple[str, bool]:
        """(the answer, whether it is Label Studio refusing the token)."""
        if self._auth is None:
            return f"error: LABEL_STUDIO_API_KEY is not set; {PAT_HINT}", False
        url = self.url + WHOAMI_PATH
        try:
            # Not redirected, with the token decided on the URL as sent, in one deadline.
            response = self._client.fetch("GET", url)
        except LabelStudioAuthError as exc:
            return f"error: {exc}", exc.refused
        except requests.RequestException as exc:
            return (f"error: Label Studio at {redact(self.url)} is unreachable ({type(exc).__name__}); check that "
                    "LABEL_STUDIO_URL is the address the backend reaches Label Studio at"), False
        if response.status_code in (401, 403):
            if self._auth.uses_legacy_token:
                return (f"error: LABEL_STUDIO_API_KEY is not a Personal Access Token, and Label Studio refused it as "
                        f"a legacy token (HTTP {response.status_code}); {PAT_HINT}"), True
            return (f"error: Label Studio refused the access token (HTTP {response.status_code} on {WHOAMI_PATH}); "
                    f"{PAT_HINT}"), True
        if response.status_code != 200 or not _is_json_object(response):
            return (f"error: {redact(self.url)}{WHOAMI_PATH} answered HTTP {response.status_code}, not Label Studio's "
                    "current user: check LABEL_STUDIO_URL"), False
        return OK, False


def _is_json_object(response: requests.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False
