"""The one client for every HTTP call that may carry the Label Studio token: the API (tasks,
predictions, label config, exports, the current user) and downloads (task images, hop by hop).

Every exchange runs under one overall deadline (``backend.deadline_http``: connecting, headers, body
and any waits between tries), follows no redirect, and carries the token only where
``backend.ls_auth`` allows it, decided on the URL as sent. HTTP 429 and 503 are tried again after
``Retry-After`` (seconds or an HTTP date) or, without one, after a capped exponential backoff with
jitter, as long as the deadline leaves time for the wait: Label Studio rate-limits asset downloads.

API failures are ``LabelStudioError``s in three classes a caller can act on: ``LabelStudioUnavailable``
(transient: unreachable, timed out, 5xx, 429 after the retries, a 2xx that is no JSON), ``LabelStudioAuthRefused`` (401/403
or no access token: the key must change) and ``LabelStudioRefused`` (any other answer about this
call, e.g. 400 or 404, with its ``status``). Messages are safe to show: no token, no payload, URLs
through ``redact``.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import random
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote

import requests

from backend.deadline_http import DeadlineSession
from backend.ls_auth import LabelStudioAuth, LabelStudioAuthError, NoCredentials
from backend.urls import UrlError, origin, parse_http_url, redact

RETRY_STATUSES = (429, 503)
API_TIMEOUT_S = 10.0
EXPORT_TIMEOUT_S = 300.0  # a project's JSON export holds every annotation: large projects take minutes
PAGE_SIZE = 100
# Where Label Studio 1.23 serves task media (its URL patterns): uploads, local-files storage, and cloud
# storage URIs resolved per task or per project (``presign`` is the older name of ``resolve``).
MEDIA_PATH = re.compile(r"/(data/upload/|data/local-files/|storage-data/uploaded/|(tasks|projects)/\d+/(resolve|presign)/)")
SETTINGS_HINT = "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a Personal Access Token, Label Studio: Account & Settings)"


class LabelStudioError(Exception):
    """A Label Studio call failed; the message says what to check and holds no token or payload."""

    transient = False


class LabelStudioUnavailable(LabelStudioError):
    """Label Studio could not answer now: unreachable, too slow, HTTP 5xx, or 429 after the retries.
    Worth trying again later, for every task alike."""

    transient = True


class LabelStudioAuthRefused(LabelStudioError):
    """Label Studio refused the token (HTTP 401/403), or no access token could be obtained for it."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LabelStudioRefused(LabelStudioError):
    """Label Studio refused this call (400, 404, …): about what was asked, not about Label Studio."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def not_json(what: str) -> LabelStudioUnavailable:
    """The error for a 2xx answer that is no JSON: a proxy's page in front of Label Studio while it
    restarts, or an answer cut short; nothing about the call itself, so worth trying again later."""
    return LabelStudioUnavailable(f"Label Studio's answer while {what} is not valid JSON (a proxy's page, "
                                  "or an answer cut short)")


def error_for_status(status: int, what: str) -> LabelStudioError:
    """The error for Label Studio answering ``status`` (not 2xx) while ``what``."""
    message = f"Label Studio answered HTTP {status} while {what}"
    if status in (401, 403):
        return LabelStudioAuthRefused(f"{message} (check LABEL_STUDIO_API_KEY is a valid Personal Access Token)", status)
    if status == 429 or status >= 500:
        return LabelStudioUnavailable(message)
    return LabelStudioRefused(message, status)


@dataclass(frozen=True)
class RetryPolicy:
    """Tries of one exchange answered 429/503: waits of ``Retry-After``, else ``base_s`` doubling up to
    ``cap_s`` with full jitter; at most ``tries`` in all, and never a wait past the deadline."""

    tries: int = 5
    base_s: float = 0.5
    cap_s: float = 8.0

    def wait_s(self, attempt: int, response: requests.Response) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 0)."""
        asked = retry_after_s(response.headers.get("Retry-After"))
        if asked is not None:
            return asked
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** attempt))


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class LabelStudioClient:
    """Calls to the Label Studio at ``base_url`` with ``auth`` (None: no key configured; calls that
    need it raise LabelStudioAuthRefused, downloads go without a token). Thread-safe."""

    def __init__(self, base_url: str, auth: LabelStudioAuth | None, retry: RetryPolicy = RetryPolicy(),
                 timeout_s: float = API_TIMEOUT_S):
        self.base_url = (base_url or "").rstrip("/")
        self._origin = origin(self.base_url) if self.base_url else None  # a malformed URL fails here
        self._base_path = (parse_http_url(self.base_url).path or "").rstrip("/") if self.base_url else ""
        self.auth = auth
        self.retry = retry
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "LabelStudioClient":
        """The client for ``settings.label_studio_url``/``label_studio_api_key`` (either may be unset)."""
        return cls(settings.label_studio_url, LabelStudioAuth.from_settings(settings), **kwargs)

    @property
    def configured(self) -> bool:
        """Whether both the URL and the key are set, so API calls can be made."""
        return bool(self.base_url) and self.auth is not None

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient({redact(self.base_url)!r})"

    def is_label_studio_url(self, url: str) -> bool:
        """Whether ``url`` is on Label Studio's origin (scheme, host and port)."""
        try:
            return self._origin is not None and origin(url) == self._origin
        except UrlError:
            return False

    def is_media_url(self, url: str) -> bool:
        """Whether ``url`` is task media on Label Studio (``MEDIA_PATH`` under ``LABEL_STUDIO_URL``'s
        path, no ``..`` segment or backslash even percent-encoded): the only URLs an image download
        sends the token to. A task's data can name any URL, and an API path fetched with the token
        (``/api/current-user/token``) would hand Label Studio's answer to whoever wrote the task."""
        if not self.is_label_studio_url(url):
            return False
        try:
            path = unquote(parse_http_url(url).path or "/")
        except UrlError:
            return False
        if "\\" in path or ".." in path.split("/") or not path.startswith(self._base_path + "/"):
            return False
        return MEDIA_PATH.match(path[len(self._base_path):]) is not None

    # --- one exchange ------------------------------------------------------------------------------

    def send(self, session: DeadlineSession, method: str, url: str, with_token: bool = True,
             **kwargs) -> requests.Response:
        """One hop of ``method url`` within ``session``'s deadline, not redirected, with the token where
        ``with_token`` and the URL allow it; 429/503 tried again as ``self.retry`` says while the deadline
        leaves time. Returns the last response (any status; a 3xx is the caller's to follow). Raises
        ``requests.RequestException`` (``DeadlineExceeded`` once the deadline passed) and
        ``LabelStudioAuthError`` as they come."""
        auth = self.auth if with_token and self.auth is not None else NoCredentials()
        for attempt in range(self.retry.tries):
            response = session.request(method, url, auth=auth, **kwargs)
            session.check()  # the deadline may have cut the headers short
            if response.status_code not in RETRY_STATUSES or attempt + 1 == self.retry.tries:
                return response
            wait = self.retry.wait_s(attempt, response)
            if wait >= session.deadline.at - time.monotonic():
                return response  # no time left to wait for: the caller sees the 429/503
            response.close()
            time.sleep(wait)
        raise AssertionError("unreachable: the last try returns")

    def fetch(self, method: str, url: str, timeout_s: float | None = None, **kwargs) -> requests.Response:
        """``send`` in a deadline of its own (``timeout_s``, default ``self.timeout_s``), body read."""
        with DeadlineSession(timeout_s or self.timeout_s) as session:
            response = self.send(session, method, url, **kwargs)
            response.content  # read within the deadline
            session.check()  # which may have cut the body short
            return response

    def call(self, method: str, path: str, what: str, timeout_s: float | None = None, **kwargs) -> requests.Response:
        """``method`` on Label Studio's API ``path`` (``/api/…``): the 2xx response, body read, or a
        classified LabelStudioError saying ``what`` failed. A redirect is refused (the token and a
        request body would follow it)."""
        if not self.configured:
            raise LabelStudioAuthRefused(f"{what} needs Label Studio: {SETTINGS_HINT}")
        try:
            response = self.fetch(method, self.base_url + path, timeout_s, **kwargs)
        except LabelStudioAuthError as exc:
            error = LabelStudioUnavailable if exc.transient else LabelStudioAuthRefused
            raise error(f"{what}: {exc}") from None
        except requests.RequestException as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {redact(self.base_url)} could not be reached while {what} ({type(exc).__name__}); "
                "check LABEL_STUDIO_URL is reachable from the backend") from None
        if not 200 <= response.status_code < 300:
            raise error_for_status(response.status_code, what)
        return response

    def call_json(self, method: str, path: str, what: str, **kwargs):
        """``call``'s answer as JSON (an answer that is no JSON is a LabelStudioError)."""
        response = self.call(method, path, what, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise not_json(what) from None

    # --- the API calls the backend makes -------------------------------------------------------------

    def label_config(self, project: str) -> str:
        """The project's labeling config (XML)."""
        what = f"reading project {project}"
        body = self.call_json("GET", f"/api/projects/{int(project)}/", what)
        config = body.get("label_config") if isinstance(body, dict) else None
        if not isinstance(config, str):
            raise LabelStudioError(f"Label Studio's answer while {what} has no label_config")
        return config

    def tasks_page(self, project: str, page: int, page_size: int = PAGE_SIZE, what: str | None = None,
                   **params) -> tuple[list[dict], int | None]:
        """One page of ``GET /api/tasks/`` for ``project`` (extra ``params`` such as ``fields`` or a
        Data Manager ``query``): (tasks, the total Label Studio counts, if it says)."""
        what = what or f"listing project {project}'s tasks (page {page})"
        body = self.call_json("GET", "/api/tasks/", what,
                              params={"project": project, "page": page, "page_size": page_size, **params})
        tasks = body.get("tasks", body.get("results")) if isinstance(body, dict) else body
        if not isinstance(tasks, list):
            raise LabelStudioError(f"Label Studio's answer while {what} has no task list")
        total = body.get("total", body.get("count")) if isinstance(body, dict) else None
        return [task for task in tasks if isinstance(task, dict)], total if isinstance(total, int) else None

    def task_ids(self, project: str, unlabeled_only: bool = False) -> list[int]:
        """Ids of the project's tasks, sorted; only tasks without annotations with ``unlabeled_only``."""
        ids, page = [], 1
        while True:
            tasks, total = self.tasks_page(project, page, fields="task_only")
            ids += [task["id"] for task in tasks if isinstance(task.get("id"), int)
                    and not (unlabeled_only and (task.get("total_annotations") or task.get("is_labeled")))]
            last = page * PAGE_SIZE >= total if total is not None else len(tasks) < PAGE_SIZE
            if not tasks or last:
                return sorted(ids)
            page += 1

    def task(self, task_id: int) -> dict:
        """The task as Label Studio sends it (with ``predictions`` and ``annotations`` where its
        serializer includes them)."""
        what = f"reading task {task_id}"
        task = self.call_json("GET", f"/api/tasks/{int(task_id)}/", what)
        if not isinstance(task, dict):
            raise LabelStudioError(f"Label Studio's answer while {what} is not a task")
        return task

    def predictions(self, task_id: int) -> list[dict]:
        what = f"reading task {task_id}'s predictions"
        predictions = self.call_json("GET", "/api/predictions/", what, params={"task": int(task_id)})
        if not isinstance(predictions, list):
            raise LabelStudioError(f"Label Studio's answer while {what} is not a list")
        return predictions

    def create_prediction(self, task_id: int, entry: dict) -> int:
        """Stores ``entry`` ({"result", "score", "model_version"}) as a prediction of the task; its id."""
        what = f"storing task {task_id}'s prediction"
        body = {"task": int(task_id), "result": entry["result"], "score": entry["score"],
                "model_version": entry["model_version"]}
        created = self.call_json("POST", "/api/predictions/", what, json=body)
        if not isinstance(created, dict) or not isinstance(created.get("id"), int):
            raise LabelStudioError(f"Label Studio's answer while {what} has no prediction id")
        return created["id"]

    def delete_prediction(self, prediction_id: int) -> None:
        self.call("DELETE", f"/api/predictions/{int(prediction_id)}/", f"deleting prediction {prediction_id}")

    def ml_backends(self, project: str) -> list[dict]:
        """The ML backends connected to ``project`` (``GET /api/ml?project=``). Label Studio asks each of
        them for ``/health`` and ``/setup`` before it answers, so never call this inside ``/setup``."""
        what = f"listing project {project}'s ML backends"
        backends = self.call_json("GET", "/api/ml", what, params={"project": int(project)})
        if not isinstance(backends, list):
            raise LabelStudioError(f"Label Studio's answer while {what} is not a list")
        return [backend for backend in backends if isinstance(backend, dict)]

    def update_ml_backend(self, backend: dict, fields: dict) -> dict:
        """``PATCH /api/ml/<id>`` of ``backend`` (as ``ml_backends`` lists it) with ``fields``; the
        updated backend. Label Studio 1.23 checks the connection again on every update and needs its
        ``url``, ``project`` and authentication in the body (an empty ``basic_auth_pass`` keeps the
        stored one), so they are sent as listed. Its check calls ``/setup`` with the body's
        ``extra_params``, so they go along too: without them that ``/setup`` would store the project
        with none (proposals and policies off) until Label Studio's next ``/setup``."""
        body = {key: backend.get(key) for key in ("url", "project", "auth_method", "extra_params")}
        if backend.get("auth_method") == "BASIC_AUTH":
            body.update(basic_auth_user=backend.get("basic_auth_user") or "", basic_auth_pass="")
        what = f"updating ML backend {backend.get('id')}"
        updated = self.call_json("PATCH", f"/api/ml/{int(backend['id'])}", what, json={**body, **fields})
        if not isinstance(updated, dict):
            raise LabelStudioError(f"Label Studio's answer while {what} is not an ML backend")
        return updated

    def export(self, project: str) -> list:
        """The project's JSON export: its annotated tasks with their current annotations."""
        what = f"exporting project {project}'s annotations"
        response = self.call("GET", f"/api/projects/{int(project)}/export", what, timeout_s=EXPORT_TIMEOUT_S,
                             params={"export_type": "JSON"})
        try:
            tasks = jsonlib.loads(response.content)
        except ValueError:
            raise not_json(what) from None
        if not isinstance(tasks, list):
            raise LabelStudioError(f"Label Studio's export of project {project} is not a list of tasks")
        return tasks

