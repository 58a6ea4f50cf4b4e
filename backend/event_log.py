"""The webhook sink that records every event: one JSON line per event in ``<MODEL_DIR>/events.jsonl``
with its time, action, project id, how many annotations and tasks it names and the first
``IDS_RECORDED`` of their ids (never the payload, whose ``project`` object carries secrets).

Bounded: a line is a few hundred bytes whatever the event (an import of a million tasks is the
count), and the file is rotated at ``MAX_BYTES`` into ``events.jsonl.1`` (the one older file kept),
so the log never holds more than twice that. The log is a record, not a duty: a write that fails
(a full disk) is logged and the event still goes to the other sinks.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from backend.files import file_lock
from backend.webhooks import WebhookEvent

logger = logging.getLogger(__name__)

IDS_RECORDED = 10
MAX_BYTES = 16 * 1024 * 1024
_TEXT_MAX = 64  # characters of a sender's string (action, project) recorded


def _short(value):
    return value[:_TEXT_MAX] if isinstance(value, str) else value


def event_summary(event: WebhookEvent) -> dict:
    """The secret-free facts of an event: action, project id, annotation and task counts, and the
    first ids of each."""
    annotations, tasks = event.annotation_ids, event.task_ids
    return {"action": _short(event.action), "project": _short(event.project_ref),
            "annotations": len(annotations), "annotation_ids": annotations[:IDS_RECORDED],
            "tasks": len(tasks), "task_ids": tasks[:IDS_RECORDED]}


class JsonlEventLog:
    """Appends one JSON line per event. One ``write`` per line on a file opened for appending, so
    lines from several workers don't interleave. Adds nothing to the webhook's answer."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    @property
    def rotated(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def wants(self, action: str) -> bool:
        return True

    def handle(self, event: WebhookEvent) -> dict:
        line = (json.dumps({"time": round(time.time(), 3), **event_summary(event)}) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._rotate_if_full(len(line))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        except OSError as exc:
            logger.warning("event log %s: %s event not recorded (%s)", self.path, event.action[:40], exc)
        return {}

    def _rotate_if_full(self, adding: int) -> None:
        """Move a file that ``adding`` bytes would take over ``max_bytes`` to ``rotated`` (one process
        at a time: the lock file makes a second one see the fresh file and leave it)."""
        if not self._full(adding):
            return
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            if self._full(adding):
                os.replace(self.path, self.rotated)

    def _full(self, adding: int) -> bool:
        size = self._size()
        return size > 0 and size + adding > self.max_bytes

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0
