"""The objects this process answered recently on each task, so that a correction click refines one.

Why memory: with Auto-Accept on (and after ✓ with it off), Label Studio's labeling page deletes
the extreme points (or the rectangle) when it accepts the mask, so the next click's request holds
that click alone; nothing in it says which object it corrects. Masks on screen reach the backend
only through the draft autosave, up to 5 s late, and carry no points. So each process remembers,
per task, the objects it answered: their prompt (extreme points or rectangle, correction clicks so
far, with the ids of the regions that drew them) and the ids of the mask regions it returned.
``backend.routing`` reads them to turn a click into a correction, and the answer reuses the mask's
ids so the page replaces that region (``backend.labeling_page``).

Bounded and expiring: at most ``MAX_TASKS`` tasks (least recently used dropped), ``MAX_PER_TASK``
objects per task (oldest dropped), each task forgotten ``TTL_S`` after its last answer; the
answered masks (packed) take at most ``MAX_ANSWER_BYTES`` together: beyond it the least recently
used tasks' objects lose theirs (a correction of them is then the model's answer alone). In memory
of one process: with several gunicorn workers (``WORKERS``) a click may reach a process that
did not answer the object, which then sees no object there (README, *Correction clicks*).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from backend.correction_masks import AnsweredMask
from backend.prompts import PromptKind

MAX_TASKS = 512
MAX_PER_TASK = 32
TTL_S = 30 * 60.0
MAX_ANSWER_BYTES = 64 * 2**20  # the answered masks kept, packed, over all tasks (the oldest tasks' go first)


@dataclass(frozen=True)
class Click:
    """A correction click: the region that drew it, (x, y) in natural pixels, positive or negative."""

    region_id: str
    point: tuple[float, float]
    positive: bool


@dataclass(frozen=True)
class KnownObject:
    """One object: an EXTREME prompt (4 extreme points) or a BOX prompt (a rectangle), plus clicks.

    tool: the prompt tool that drew its anchors; anchor_ids: the ids of those regions (the 4 points,
    or the rectangle), which identify the object; anchor_points: the (4, 2) extreme points (empty
    for a box); box: the extreme points' box or the rectangle (x0, y0, x1, y1); clicks: the
    corrections in click order; mask_regions: the regions answered for it (id, control, type: what
    replacing or removing them takes), empty until it has been answered; answer: the mask answered
    for it and the clicks that mask answered (``backend.correction_masks``), None until answered,
    when SAM answered (it refines from its own logits), or once the store's mask budget dropped it.
    """

    kind: PromptKind
    tool: str
    label: str
    box: tuple[float, float, float, float]
    anchor_ids: tuple[str, ...]
    anchor_points: np.ndarray
    clicks: tuple[Click, ...] = ()
    mask_regions: tuple[dict, ...] = ()
    answer: AnsweredMask | None = None

    @property
    def click_ids(self) -> set[str]:
        return {click.region_id for click in self.clicks}


def region_reference(region: dict) -> dict:
    """What remembering an answered mask region takes: everything but a brush mask's RLE (large;
    the page replaces a region by its id)."""
    reference = {key: value for key, value in region.items() if key not in ("value", "score")}
    reference["value"] = {key: value for key, value in (region.get("value") or {}).items() if key != "rle"}
    return reference


class RecentObjects:
    """Task key -> its known objects, oldest first (the latest answered last). Thread-safe."""

    def __init__(self, max_tasks: int = MAX_TASKS, max_per_task: int = MAX_PER_TASK, ttl_s: float = TTL_S,
                 clock: Callable[[], float] = time.monotonic, max_answer_bytes: int = MAX_ANSWER_BYTES):
        self.max_tasks, self.max_per_task, self.ttl_s, self.clock = max_tasks, max_per_task, ttl_s, clock
        self.max_answer_bytes = max_answer_bytes
        self._tasks: OrderedDict[tuple, tuple[float, list[KnownObject]]] = OrderedDict()
        self._answer_bytes = 0
        self._lock = threading.Lock()

    def of_task(self, key: tuple) -> list[KnownObject]:
        """The task's objects, oldest first; none once the task has been idle for ``ttl_s``."""
        with self._lock:
            entry = self._tasks.get(key)
            if entry is None:
                return []
            if self.clock() - entry[0] > self.ttl_s:
                self._drop(key)
                return []
            return list(entry[1])

    def remember(self, key: tuple, answered: list[KnownObject], forgotten: list[KnownObject] = ()) -> None:
        """Stores ``answered`` objects as the task's latest (replacing the entries of the same
        anchors) and drops ``forgotten`` ones (e.g. merged into another region)."""
        if not answered and not forgotten:
            return
        drop = {obj.anchor_ids for obj in [*answered, *forgotten]}
        with self._lock:
            objects = self._drop(key) if key in self._tasks else []
            objects = [obj for obj in objects if obj.anchor_ids not in drop] + list(answered)
            self._tasks[key] = (self.clock(), objects[-self.max_per_task:])
            self._answer_bytes += _answer_bytes(self._tasks[key][1])
            while len(self._tasks) > self.max_tasks:
                self._drop(next(iter(self._tasks)))
            self._shed_answers()

    def _drop(self, key: tuple) -> list[KnownObject]:
        _, objects = self._tasks.pop(key)
        self._answer_bytes -= _answer_bytes(objects)
        return objects

    def _shed_answers(self) -> None:
        """Over the budget, the least recently used tasks' objects forget their answered masks."""
        for key in list(self._tasks):
            if self._answer_bytes <= self.max_answer_bytes:
                return
            stamp, objects = self._tasks[key]
            self._answer_bytes -= _answer_bytes(objects)
            self._tasks[key] = (stamp, [replace(obj, answer=None) for obj in objects])


def _answer_bytes(objects: list[KnownObject]) -> int:
    return sum(obj.answer.nbytes for obj in objects if obj.answer is not None)
