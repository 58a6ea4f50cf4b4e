"""Label Studio webhook events: the interface the retraining loop plugs into, and the default
sink that only records them.

Label Studio 1.23 sends (body ``{"action": …, …}``): ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED``
(``annotation`` and ``task`` objects), ``ANNOTATIONS_CREATED`` (``annotation`` and ``task`` as
lists), ``ANNOTATIONS_DELETED`` (``annotations``: ``[{"id"}]``), ``TASKS_CREATED``/``TASKS_DELETED``
(``tasks``), ``PROJECT_CREATED``/``PROJECT_UPDATED``/``PROJECT_DELETED``, ``LABEL_LINK_*``, and
``START_TRAINING`` (the "Start training" button). Every payload's ``project`` object carries
secrets (``token``, ``task_data_password``), so only ids are ever recorded.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Protocol


class EventSink(Protocol):
    def handle(self, action: str, payload: dict) -> dict:
        """Accepts one event fast (well under a second; queue any real work) and returns a small
        JSON-able answer (``{"job": id}`` is shown by Label Studio for START_TRAINING)."""


def _items(value) -> list:
    return value if isinstance(value, list) else [value]


def _ids(value) -> list[int]:
    return [item["id"] for item in _items(value) if isinstance(item, dict) and isinstance(item.get("id"), int)]


def event_summary(action: str, payload: dict) -> dict:
    """The secret-free facts of an event: action, project id, annotation and task ids."""
    project = payload.get("project")
    project_ref = project.get("id") if isinstance(project, dict) else project
    tasks = _ids(payload.get("task")) + _ids(payload.get("tasks"))
    if not tasks:  # an annotation names its task by id
        tasks = [a["task"] for a in _items(payload.get("annotation"))
                 if isinstance(a, dict) and isinstance(a.get("task"), int)]
    return {
        "action": action,
        "project": project_ref if isinstance(project_ref, (int, str)) else None,
        "annotation_ids": _ids(payload.get("annotation")) + _ids(payload.get("annotations")),
        "task_ids": tasks,
    }


class JsonlEventLog:
    """Appends one JSON line per event to ``<MODEL_DIR>/events.jsonl``: time and ``event_summary``.

    One ``write`` per line on a file opened for appending, so lines from several workers don't
    interleave.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def handle(self, action: str, payload: dict) -> dict:
        line = json.dumps({"time": round(time.time(), 3), **event_summary(action, payload)}) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return {"recorded": True}
