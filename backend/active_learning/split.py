"""Held-out validation tasks, chosen deterministically by task id.

A task is held out when a hash of its id falls under ``fraction``, so the choice does not depend
on the order tasks arrive in and a task keeps its side as the project grows; at least one task is
held out and at least one trains.
"""

from __future__ import annotations

import zlib
from typing import Sequence, TypeVar

VALIDATION_FRACTION = 0.2

Task = TypeVar("Task")


def task_hash(task_id: int) -> float:
    """A uniform-looking number in [0, 1) fixed by the task id."""
    return zlib.crc32(f"task:{task_id}".encode()) / 2**32


class NotEnoughTasks(ValueError):
    """Too few annotated tasks to hold any out."""


def split_tasks(tasks: Sequence[Task], task_id=lambda t: t.task_id, fraction: float = VALIDATION_FRACTION) -> tuple[list[Task], list[Task]]:
    """(training tasks, held-out tasks). Raises NotEnoughTasks with fewer than 2 tasks."""
    if len(tasks) < 2:
        raise NotEnoughTasks(f"need at least 2 annotated tasks (one to train on, one to hold out), have {len(tasks)}")
    ranked = sorted(tasks, key=lambda t: task_hash(task_id(t)))
    held_out = sum(task_hash(task_id(t)) < fraction for t in ranked)
    held_out = min(max(held_out, 1), len(ranked) - 1)
    return ranked[held_out:], ranked[:held_out]
