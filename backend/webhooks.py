"""Label Studio webhook events: the one parser of their payloads, and the one place an event fans
out to the sinks that want it (the event log, retraining, pre-annotation, embedding ahead).

Label Studio 1.23 sends (body ``{"action": …, …}``): ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED``
(``annotation`` and ``task`` objects), ``ANNOTATIONS_CREATED`` (``annotation`` and ``task`` as
lists), ``ANNOTATIONS_DELETED`` (``annotations``: ``[{"id"}]``), ``TASKS_CREATED``/``TASKS_DELETED``
(``tasks``), ``PROJECT_CREATED``/``PROJECT_UPDATED``/``PROJECT_DELETED``, ``LABEL_LINK_*``, and
``START_TRAINING`` (the "Start training" button). Every payload's ``project`` object carries
secrets (``token``, ``task_data_password``): payloads are never logged, only ids are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from backend.project_store import project_id

TASKS_CREATED = "TASKS_CREATED"


class EventError(ValueError):
    """An event whose payload lacks what a sink needs; the message is safe to return (400)."""


def _items(value) -> list:
    return value if isinstance(value, list) else [value]


def _ids(value) -> list[int]:
    return [item["id"] for item in _items(value) if isinstance(item, dict) and isinstance(item.get("id"), int)]


@dataclass(frozen=True)
class WebhookEvent:
    """One event: ``action`` and its payload (the body without ``action``). The tolerant readers
    (``project_ref``, ``tasks``, ``task_ids``, ``annotation_ids``) never raise; ``project`` is for
    sinks that cannot act without the project and raises EventError."""

    action: str
    payload: dict

    def project(self, annotation: object = None) -> str:
        """The event's project id (``project.id``, or ``project``, else the ``annotation``'s)."""
        candidate = self.project_ref
        if candidate is None and isinstance(annotation, dict):
            candidate = annotation.get("project")
        if candidate is None:
            raise EventError("event without a project id ('project.id')")
        try:
            return project_id(candidate)
        except ValueError as exc:
            raise EventError(str(exc)) from None

    @property
    def project_ref(self):
        """The project as sent (an id, or None)."""
        project = self.payload.get("project")
        ref = project.get("id") if isinstance(project, dict) else project
        return ref if isinstance(ref, (int, str)) else None

    @property
    def tasks(self) -> list:
        """The ``tasks`` list as sent (TASKS_CREATED carries the new tasks' data), or []."""
        tasks = self.payload.get("tasks")
        return tasks if isinstance(tasks, list) else []

    @property
    def task_ids(self) -> list[int]:
        """Ids of the tasks the event names (an annotation names its task by id)."""
        tasks = _ids(self.payload.get("task")) + _ids(self.payload.get("tasks"))
        if not tasks:
            tasks = [a["task"] for a in _items(self.payload.get("annotation"))
                     if isinstance(a, dict) and isinstance(a.get("task"), int)]
        return tasks

    @property
    def annotation_ids(self) -> list[int]:
        return _ids(self.payload.get("annotation")) + _ids(self.payload.get("annotations"))


class EventSink(Protocol):
    def wants(self, action: str) -> bool:
        """Whether events of ``action`` concern this sink."""

    def handle(self, event: WebhookEvent) -> dict:
        """Accepts one event fast (well under a second; queue any real work) and returns what joins
        the webhook's JSON answer (Label Studio 1.23 keeps the ``{"job": id}`` of a START_TRAINING
        answer and shows none of it).
        Raises EventError for a payload it cannot act on."""


class Webhooks:
    """Hands each event to every sink that wants it, in order; their answers make one."""

    def __init__(self, sinks: Sequence[EventSink]):
        self.sinks = list(sinks)

    def handle(self, action: str, payload: dict) -> dict:
        event = WebhookEvent(action, payload)
        answer: dict = {}
        for sink in self.sinks:
            if sink.wants(action):
                answer.update(sink.handle(event))
        return answer
