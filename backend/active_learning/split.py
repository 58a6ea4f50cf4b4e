"""Cross-validation folds of a project's annotated tasks, chosen deterministically by task id.

Tasks are ranked by a hash of their id and dealt round-robin into the folds, so the folds do not
depend on the order tasks arrive in and hold nearly equal numbers of tasks. Folds split tasks,
never a task's instances: instances of one image look alike, and a candidate must be scored on
images it never saw.
"""

from __future__ import annotations

import zlib
from typing import Sequence, TypeVar

Task = TypeVar("Task")


def task_hash(task_id: int) -> float:
    """A uniform-looking number in [0, 1) fixed by the task id."""
    return zlib.crc32(f"task:{task_id}".encode()) / 2**32


def task_folds(tasks: Sequence[Task], folds: int, task_id=lambda t: t.task_id) -> list[list[Task]]:
    """``min(folds, len(tasks))`` disjoint, non-empty groups of ``tasks`` that together hold them all."""
    if len(tasks) < 2 or folds < 2:
        raise ValueError(f"cross-validation needs at least 2 tasks and 2 folds, got {len(tasks)} and {folds}")
    ranked = sorted(tasks, key=lambda t: task_hash(task_id(t)))
    count = min(folds, len(ranked))
    return [ranked[index::count] for index in range(count)]
