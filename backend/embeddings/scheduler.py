"""The embedded embed-ahead scheduler (no ``REDIS_URL``): a bounded priority queue of task images
and one background thread, in the backend process that has SAM loaded, that embeds them.

Priorities: ``CURRENT`` (the task an annotator opens: prewarm), ``NEXT`` (the tasks after the one
being annotated), ``IMPORT`` (tasks just imported). Duplicates are dropped: an image already queued
keeps one place, moved up if asked for at a higher priority; the image being embedded and images
embedded lately are not queued again (except at ``CURRENT``, which always checks the store). A
full queue makes room for a request by dropping the newest one of a lower priority, or drops
the request.

The thread never holds up requests: it waits while a request computes an embedding, its own
computation stops between two layers when one starts (``backend.embeddings.preemption``; the
image goes back to the queue), and with several gunicorn workers on one ``MODEL_DIR`` a file lock
lets one background embedding run at a time on the machine. The thread starts with the first
request, in the process that queues it (so also in each gunicorn worker after the fork).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from backend.files import file_lock
from backend.embeddings.embed_one import FAILED, EmbedRequest
from backend.embeddings.preemption import Preempted, foreground_busy
from backend.embeddings.progress import LocalProgress, work_status
from backend.images import ImageError
from backend.process_thread import ProcessThread

logger = logging.getLogger(__name__)

CURRENT, NEXT, IMPORT = 0, 1, 2
PRIORITY_NAMES = ("current", "next", "import")
RECENTLY_DONE_KEPT = 10_000
_IDLE_WAIT_S = 0.2


class EmbedScheduler:
    """``submit(requests, priority)`` queues images; ``embed(request) -> outcome`` does one
    (``backend.embeddings.embed_one.embed_task_image`` with the server's SAM and image loader)."""

    def __init__(self, embed: Callable[[EmbedRequest], str], max_queued: int, machine_lock: Path | None = None):
        self._embed = embed
        self.max_queued = max_queued
        self._machine_lock = machine_lock
        self.progress = LocalProgress()
        self._lock = threading.Condition()
        self._queued: dict[str, tuple[int, int, EmbedRequest]] = {}  # url -> (priority, seq, request)
        self._heap: list[tuple[int, int, str]] = []  # (priority, seq, url); stale entries skipped
        self._seq = itertools.count()
        self._running: str | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()  # urls embedded or found stored lately
        self._thread = ProcessThread(self._run, "embed-ahead")
        self._stop = False

    def submit(self, requests: list[EmbedRequest], priority: int) -> int:
        """Queue ``requests`` at ``priority``; returns how many were queued or moved up."""
        queued = 0
        with self._lock:
            for request in requests:
                queued += self._add(request, priority, next(self._seq))
            self._lock.notify()
        if queued:
            self._thread.ensure_running()
        return queued

    def depth(self) -> dict:
        """Images waiting per priority, and in all."""
        with self._lock:
            counts = [0, 0, 0]
            for priority, _, _ in self._queued.values():
                counts[priority] += 1
        return {**dict(zip(PRIORITY_NAMES, counts)), "total": sum(counts)}

    def status(self) -> dict:
        """For ``GET /jobs``: queue, progress (done counts, rate, ETA, recent errors per task), drops."""
        with self._lock:
            running = self._running is not None
        return work_status("backend process", self.depth(), int(running), self.progress.summary())

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join()

    # -- the queue ------------------------------------------------------------------------------------

    def _add(self, request: EmbedRequest, priority: int, seq: int) -> bool:
        url = request.url
        if url == self._running or (priority != CURRENT and url in self._recent):
            return False
        if url in self._queued:
            if self._queued[url][0] <= priority:
                return False
        elif len(self._queued) >= self.max_queued and not self._make_room(priority):
            self.progress.record("dropped")
            return False
        self._queued[url] = (priority, seq, request)
        heapq.heappush(self._heap, (priority, seq, url))
        return True

    def _make_room(self, priority: int) -> bool:
        """Drop the newest request of the lowest priority below ``priority``; False if there is none."""
        url, (worst, _, _) = max(self._queued.items(), key=lambda item: item[1][:2])
        if worst <= priority:
            return False
        del self._queued[url]  # its heap entry goes stale
        self.progress.record("dropped")
        return True

    def _pop(self) -> tuple[int, EmbedRequest] | None:
        """The first request of the highest priority, with its priority; it becomes the running one."""
        while self._heap:
            priority, seq, url = heapq.heappop(self._heap)
            entry = self._queued.get(url)
            if entry is not None and entry[:2] == (priority, seq):
                del self._queued[url]
                self._running = url
                return priority, entry[2]
        return None

    # -- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._queued:
                    self._lock.wait()
                if self._stop:
                    return
            while foreground_busy():  # a request is computing an embedding: let it have the CPU
                time.sleep(_IDLE_WAIT_S)
            with self._lock:
                popped = self._pop()
            if popped is not None:
                self._work(*popped)

    def _work(self, priority: int, request: EmbedRequest) -> None:
        try:
            lock = file_lock(self._machine_lock) if self._machine_lock is not None else nullcontext()
            with lock:
                outcome = self._embed(request)
        except Preempted:
            logger.info("embedding task %s's image ahead gave way to a request; queued again", request.task_id)
            with self._lock:
                self._running = None
                self._add(request, priority, -next(self._seq))  # first again in its priority
            return
        except ImageError as exc:
            outcome = FAILED
            self.progress.record(FAILED, request.task_id, str(exc))
            logger.warning("embedding task %s's image ahead: %s", request.task_id, exc)
        except Exception as exc:  # one bad image never stops the scheduler
            outcome = FAILED
            self.progress.record(FAILED, request.task_id, f"{type(exc).__name__}; see the backend's log")
            logger.exception("embedding task %s's image ahead failed", request.task_id)
        else:
            self.progress.record(outcome, request.task_id)
        with self._lock:
            self._running = None
            if outcome != FAILED:
                self._recent[request.url] = None
                while len(self._recent) > RECENTLY_DONE_KEPT:
                    self._recent.popitem(last=False)
