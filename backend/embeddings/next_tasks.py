"""The tasks an annotator gets next: the project's unlabeled tasks after the current one, in Label
Studio's default order (by id), read with one small page from ``GET /api/tasks`` (the Personal
Access Token, ``backend.ls_auth``). The page is filtered on the server (id after the current one,
no annotations) and checked again here, so a server that ignores a filter costs only a wasted page.
"""

from __future__ import annotations

import json

import requests

from backend.deadline_http import DeadlineSession
from backend.ls_auth import LabelStudioAuth, LabelStudioAuthError

TIMEOUT_S = 10.0


class NextTasksError(Exception):
    """The page could not be read; the message is safe to log (no token)."""


class NextTasks:
    def __init__(self, label_studio_url: str, auth: LabelStudioAuth):
        self._url = label_studio_url.rstrip("/")
        self._auth = auth

    @classmethod
    def from_settings(cls, settings) -> "NextTasks | None":
        """None without ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``."""
        auth = LabelStudioAuth.from_settings(settings)
        return cls(settings.label_studio_url, auth) if auth is not None else None

    def after(self, project: str, task_id: int, count: int) -> list[dict]:
        """Up to ``count`` unlabeled tasks of ``project`` with ids after ``task_id``: ``{"id", "data"}``."""
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": task_id},
            {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
        ]}, "ordering": ["tasks:id"]}
        params = {"project": project, "page": 1, "page_size": count * 2, "fields": "task_only",
                  "query": json.dumps(query)}
        try:  # within one deadline, not redirected (backend.deadline_http)
            with DeadlineSession(TIMEOUT_S) as session:
                response = session.request("GET", f"{self._url}/api/tasks/", params=params, auth=self._auth)
                session.check()  # the deadline may have cut the answer short
        except requests.RequestException as exc:
            raise NextTasksError(f"Label Studio could not be reached for project {project}'s next tasks "
                                 f"({type(exc).__name__})") from None
        except LabelStudioAuthError as exc:
            raise NextTasksError(f"reading project {project}'s next tasks: {exc}") from None
        if response.status_code != 200:
            raise NextTasksError(f"Label Studio answered HTTP {response.status_code} for project {project}'s next tasks")
        try:
            body = response.json()
        except ValueError:
            raise NextTasksError(f"Label Studio's list of project {project}'s tasks is not JSON") from None
        tasks = body.get("tasks", body.get("results")) if isinstance(body, dict) else body
        if not isinstance(tasks, list):
            raise NextTasksError(f"Label Studio's list of project {project}'s tasks has no task list")
        unlabeled = [t for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), int) and t["id"] > task_id
                     and not t.get("total_annotations") and not t.get("is_labeled")]
        return sorted(unlabeled, key=lambda t: t["id"])[:count]
