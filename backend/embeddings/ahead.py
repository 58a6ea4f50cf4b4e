"""Embed ahead: what makes SAM embeddings ready before the annotator's first click.

- ``handle`` (a webhook sink for ``TASKS_CREATED``, which carries the new tasks' data): an import
  queues up to ``EMBED_AHEAD`` of their images at ``IMPORT`` priority (``tasks_created``); later
  tasks are reached by the next one.
- ``prewarm``: a labeling page opening a task (``params.context.event == "prewarm"``) queues its
  image first (``CURRENT``).
- ``working_on``: any interactive call on a task queues the project's next ``EMBED_NEXT_TASKS``
  unlabeled tasks (``NEXT``). Finding them takes one small page from Label Studio, read in a
  background thread, at most once a minute per task, never in the request.

``queue`` is the ``EmbedScheduler`` (embedded) or the ``RQEmbedQueue`` (``REDIS_URL``): both take
``submit(requests, priority)``, ``depth()`` and ``status()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque

from backend.embeddings.embed_one import EmbedRequest, embed_task_image
from backend.embeddings.next_tasks import NextTasks, NextTasksError
from backend.embeddings.scheduler import CURRENT, IMPORT, NEXT, EmbedScheduler
from backend.labeling import LabelingConfig
from backend.process_thread import ProcessThread
from backend.project_store import ProjectIdError, project_id
from backend.webhooks import TASKS_CREATED, WebhookEvent

logger = logging.getLogger(__name__)

LOOKUP_INTERVAL_S = 60.0  # per (project, task): the next tasks are looked up at most this often
LOOKUPS_WAITING_MAX = 8  # lookups beyond this many waiting are dropped (Label Studio is slow or down)
_REMEMBERED_LOOKUPS = 1000


def task_request(task: dict, image_key: str, project: str | None) -> EmbedRequest | None:
    """The embed request for ``task``'s image (``data[image_key]``), or None if it has none."""
    data = task.get("data") if isinstance(task, dict) else None
    url = data.get(image_key) if isinstance(data, dict) else None
    if not isinstance(url, str) or not url.strip():
        return None
    task_id = task.get("id") if isinstance(task.get("id"), int) else None
    return EmbedRequest(url=url.strip(), task_id=task_id, project=project)


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
        self._looked_up: OrderedDict[tuple[str, int], float] = OrderedDict()  # (project, task) -> time
        self._lookups: deque[tuple[str, int, str]] = deque()  # (project, task, image key) to look up
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
        """An import: its tasks' images queued ahead, for a project whose /setup said where they are."""
        try:
            project = project_id(event.project_ref)
        except ProjectIdError:
            return {"embeddings_queued": 0}
        stored = self._projects.load(project)
        if stored is None:  # no /setup seen: which data key holds the image is unknown
            logger.info("TASKS_CREATED for project %s, which sent no /setup yet: its images are embedded on use", project)
            return {"embeddings_queued": 0}
        image_key = LabelingConfig.parse(stored.label_config, self._extreme_tool_prefix).image_key
        return self.tasks_created(project, event.tasks, image_key)

    def tasks_created(self, project: str, tasks: list, image_key: str) -> dict:
        """Queue the first ``EMBED_AHEAD`` imported tasks' images; the answer for the webhook."""
        requests = [r for r in (task_request(t, image_key, project) for t in tasks) if r is not None]
        queued = self.queue.submit(requests[: self._embed_ahead], IMPORT)
        return {"embeddings_queued": queued}

    def prewarm(self, project: str, task: dict, image_key: str) -> None:
        request = task_request(task, image_key, project)
        if request is not None:
            self.queue.submit([request], CURRENT)

    def working_on(self, project: str, task_id: int | None, image_key: str) -> None:
        """An annotator works on ``task_id``: look up the project's next tasks in the background."""
        if self._next_tasks is None or not isinstance(task_id, int) or self._next_count <= 0:
            return
        now = time.monotonic()
        with self._lock:
            last = self._looked_up.get((project, task_id))
            if last is not None and now - last < LOOKUP_INTERVAL_S:
                return
            if self._lookups_waiting >= LOOKUPS_WAITING_MAX:
                return
            self._looked_up[(project, task_id)] = now
            self._looked_up.move_to_end((project, task_id))
            while len(self._looked_up) > _REMEMBERED_LOOKUPS:
                self._looked_up.popitem(last=False)
            self._lookups_waiting += 1
            self._lookups.append((project, task_id, image_key))
            self._lock.notify()
        self._lookup_thread.ensure_running()

    def _look_up_next(self) -> None:
        """The lookup thread, one per process: Label Studio's answers never hold up a request."""
        while True:
            with self._lock:
                while not self._lookups:
                    self._lock.wait()
                lookup = self._lookups.popleft()
            self._queue_next(*lookup)

    def _queue_next(self, project: str, task_id: int, image_key: str) -> None:
        try:
            tasks = self._next_tasks.after(project, task_id, self._next_count)
            requests = [r for r in (task_request(t, image_key, project) for t in tasks) if r is not None]
            self.queue.submit(requests, NEXT)
        except NextTasksError as exc:
            logger.warning("embed ahead: %s", exc)
        except Exception:
            logger.exception("embed ahead: looking up project %s's tasks after %s failed", project, task_id)
        finally:
            with self._lock:
                self._lookups_waiting -= 1
