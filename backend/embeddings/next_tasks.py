"""The tasks an annotator gets next: the project's unlabeled tasks after the current one, in Label
Studio's default order (by id), read with one small page from ``GET /api/tasks`` (the Personal
Access Token, ``backend.label_studio_client``). The page is filtered on the server (id after the current one,
no annotations) and checked again here, so a server that ignores a filter costs only a wasted page.
"""

from __future__ import annotations

import json

from backend.label_studio_client import LabelStudioClient, LabelStudioError

TIMEOUT_S = 10.0

# The page could not be read: any Label Studio failure; the message is safe to log (no token).
NextTasksError = LabelStudioError


class NextTasks:
    def __init__(self, client: LabelStudioClient):
        self._client = client

    @classmethod
    def from_settings(cls, settings) -> "NextTasks | None":
        """None without ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``."""
        client = LabelStudioClient.from_settings(settings, timeout_s=TIMEOUT_S)
        return cls(client) if client.configured else None

    def after(self, project: str, task_id: int, count: int, until: int | None = None) -> list[dict]:
        """Up to ``count`` unlabeled tasks of ``project`` with ids after ``task_id`` (and at most
        ``until``): ``{"id", "data"}``."""
        items = [
            {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": task_id},
            {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
        ]
        if until is not None:
            items.append({"filter": "filter:tasks:id", "operator": "less_or_equal", "type": "Number", "value": until})
        query = {"filters": {"conjunction": "and", "items": items}, "ordering": ["tasks:id"]}
        tasks, _ = self._client.tasks_page(project, 1, count * 2, what=f"reading project {project}'s next tasks",
                                           fields="task_only", query=json.dumps(query))
        unlabeled = [t for t in tasks if isinstance(t.get("id"), int) and task_id < t["id"] <= (until or t["id"])
                     and not t.get("total_annotations") and not t.get("is_labeled")]
        return sorted(unlabeled, key=lambda t: t["id"])[:count]
