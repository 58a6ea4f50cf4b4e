"""The webhook sink that records every event: one JSON line per event in ``<MODEL_DIR>/events.jsonl``
with its time, action, and the ids it names (project, annotations, tasks; never the payload, whose
``project`` object carries secrets)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from backend.webhooks import WebhookEvent


def event_summary(event: WebhookEvent) -> dict:
    """The secret-free facts of an event: action, project id, annotation and task ids."""
    return {"action": event.action, "project": event.project_ref, "annotation_ids": event.annotation_ids,
            "task_ids": event.task_ids}


class JsonlEventLog:
    """Appends one JSON line per event. One ``write`` per line on a file opened for appending, so
    lines from several workers don't interleave. Adds nothing to the webhook's answer."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def wants(self, action: str) -> bool:
        return True

    def handle(self, event: WebhookEvent) -> dict:
        line = json.dumps({"time": round(time.time(), 3), **event_summary(event)}) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return {}
