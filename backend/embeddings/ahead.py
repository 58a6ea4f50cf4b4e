"""Embed ahead: what makes SAM embeddings ready before the annotator's first click.

- ``handle`` (a webhook sink for ``TASKS_CREATED``): an import queues up to ``EMBED_AHEAD`` of the
  new tasks' images at ``IMPORT`` priority. The event only *hints* which tasks are new: the open
  webhook could be sent by anyone, so the tasks and their images are read from Label Studio (one
  page of the project's unlabeled tasks between the first and last id the event names), never
  taken from the payload. A forged event can at most make the backend embed images of a connected
  project's own tasks, which it would embed on first use anyway.
- ``prewarm``: a labeling page opening a task (``params.context.event == "prewarm"``) queues its
  image first (``CURRENT``).
- ``working_on``: any interactive call on a task queues the project's next ``EMBED_NEXT_TASKS``
  unlabeled tasks (``NEXT``).

Finding tasks in Label Studio takes one small page, read in a background thread, at most once a
minute per (kind, project, task), at most ``LOOKUPS_WAITING_MAX`` waiting, never in the request.
Image references longer than ``MAX_URL_CHARS`` (a large data: URI) are not queued: what is queued
travels through Redis with ``REDIS_URL``; such an image is embedded when first used.

``queue`` is the ``EmbedScheduler`` (embedded) or the ``RQEmbedQueue`` (``REDIS_URL``): both take
``submit(requests, priority)``, ``depth()`` and ``status()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from backend.embeddings.embed_one import EmbedRequest, embed_task_image
from backend.embeddings.next_tasks import NextTasks, NextTasksError
from backend.embeddings.scheduler import CURRENT, IMPORT, NEXT, EmbedScheduler
from backend.labeling import parse_label_config
from backend.process_thread import ProcessThread
from backend.project_store import ProjectIdError, project_id
from backend.webhooks import TASKS_CREATED, WebhookEvent

logger = logging.getLogger(__name__)

LOOKUP_INTERVAL_S = 60.0  # per (project, task): the next tasks are looked up at most this often
LOOKUPS_WAITING_MAX = 8  # lookups beyond this many waiting are dropped (Label Studio is slow or down)
_REMEMBERED_LOOKUPS = 1000
MAX_URL_CHARS = 8192


def task_request(task: dict, image_key: str, project: str | None) -> EmbedRequest | None:
    """The embed request for ``task``'s image (``data[image_key]``), or None if it has none (or one
    longer than MAX_URL_CHARS)."""
    data = task.get("data") if isinstance(task, dict) else None
    url = data.get(image_key) if isinstance(data, dict) else None
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL_CHARS:
        return None
    task_id = task.get("id") if isinstance(task.get("id"), int) else None
    return EmbedRequest(url=url.strip(), task_id=task_id, project=project)


@dataclass(frozen=True)
class Lookup:
    """Tasks to find in Label Studio: up to ``count`` unlabeled tasks of ``project`` with ids after
    ``after`` (and up to ``until``), their images queued at ``priority``."""

    project: str
    after: int
    until: int | None
    count: int
    priority: int
    image_key: str


class EmbedAhead:
    """``projects``: the ``ProjectStore`` (an import's image key comes from the project's /setup);
    ``extreme_tool_prefix``: the setting its labeling config is parsed with."""

    def __init__(self, queue, next_tasks: NextTasks | None, embed_ahead: int, next_count: int, projects=None,
                 extreme_tool_prefix: str = ""):
        self.queue = queue
        self._projects = projects
        self._extreme_tool_prefix = extreme_tool_prefix
        self._next_tasks = next_tasks
        self._embed_ahead = embed_ahead
        self._next_count = next_count
        self._lock = threading.Condition()
        self._looked_up: OrderedDict[tuple[int, str, int], float] = OrderedDict()  # (priority, project, after)
        self._lookups: deque[Lookup] = deque()
        self._lookups_waiting = 0  # queued or running
        self._lookup_thread = ProcessThread(self._look_up_next, "next-tasks")

    @classmethod
    def from_settings(cls, settings, sam, images, projects=None) -> "EmbedAhead":
        """Embedding ahead with the server's SAM segmenter and image loader: on RQ workers with
        ``REDIS_URL``, else in a background thread of this process."""
        if settings.redis_url:
            from backend.embeddings.rq_queue import RQEmbedQueue

            queue = RQEmbedQueue(settings.redis_url, settings.embed_queue_size)
        else:
            queue = EmbedScheduler(lambda request: embed_task_image(sam, images, request), settings.embed_queue_size,
                                   machine_lock=settings.model_dir / "embeddings" / "background.lock")
        return cls(queue, NextTasks.from_settings(settings), settings.embed_ahead, settings.embed_next_tasks, projects,
                   settings.extreme_tool_prefix)

    def wants(self, action: str) -> bool:
        return action == TASKS_CREATED and self._projects is not None

    def handle(self, event: WebhookEvent) -> dict:
        """An import: its tasks' images looked up in Label Studio and queued ahead, for a project whose
        /setup said where they are."""
        try:
            project = project_id(event.project_ref)
        except ProjectIdError:
            return {"embeddings_ahead": "no project"}
        stored = self._projects.load(project)
        if stored is None:  # no /setup seen: not connected here, and the data key of the image is unknown
            logger.info("TASKS_CREATED for project %s, which sent no /setup yet: its images are embedded on use", project)
            return {"embeddings_ahead": "not connected"}
        ids = event.task_ids
        if not ids or self._next_tasks is None or self._embed_ahead <= 0:
            return {"embeddings_ahead": "off" if ids else "no task ids"}
        image_key = parse_label_config(stored.label_config, self._extreme_tool_prefix).image_key
        looking = self._look_up(Lookup(project, min(ids) - 1, max(ids), self._embed_ahead, IMPORT, image_key))
        return {"embeddings_ahead": "looking up" if looking else "skipped"}

    def prewarm(self, project: str, task: dict, image_key: str) -> None:
        request = task_request(task, image_key, project)
        if request is not None:
            self.queue.submit([request], CURRENT)

    def working_on(self, project: str, task_id: int | None, image_key: str) -> None:
        """An annotator works on ``task_id``: look up the project's next tasks in the background."""
        if self._next_tasks is None or not isinstance(task_id, int) or self._next_count <= 0:
            return
        self._look_up(Lookup(project, task_id, None, self._next_count, NEXT, image_key))

    def _look_up(self, lookup: Lookup) -> bool:
        """Hand ``lookup`` to the lookup thread, unless the same was asked within LOOKUP_INTERVAL_S or
        too many wait (Label Studio is slow or down, or events flood in); whether it was handed on."""
        key = (lookup.priority, lookup.project, lookup.after)
        now = time.monotonic()
        with self._lock:
            last = self._looked_up.get(key)
            if last is not None and now - last < LOOKUP_INTERVAL_S:
                return False
            if self._lookups_waiting >= LOOKUPS_WAITING_MAX:
                return False
            self._looked_up[key] = now
            self._looked_up.move_to_end(key)
            while len(self._looked_up) > _REMEMBERED_LOOKUPS:
                self._looked_up.popitem(last=False)
            self._lookups_waiting += 1
            self._lookups.append(lookup)
            self._lock.notify()
        self._lookup_thread.ensure_running()
        return True

    def _look_up_next(self) -> None:
        """The lookup thread, one per process: Label Studio's answers never hold up a request."""
        while True:
            with self._lock:
                while not self._lookups:
                    self._lock.wait()
                lookup = self._lookups.popleft()
            self._queue_found(lookup)

    def _queue_found(self, lookup: Lookup) -> None:
        project = lookup.project
        try:
            tasks = self._next_tasks.after(project, lookup.after, lookup.count, until=lookup.until)
            requests = [r for r in (task_request(t, lookup.image_key, project) for t in tasks) if r is not None]
            self.queue.submit(requests, lookup.priority)
        except NextTasksError as exc:
            logger.warning("embed ahead: %s", exc)
        except Exception:
            logger.exception("embed ahead: looking up project %s's tasks after %s failed", project, lookup.after)
        finally:
            with self._lock:
                self._lookups_waiting -= 1
