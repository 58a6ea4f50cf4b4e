"""Fakes for pre-annotation tests: an in-memory Label Studio with the calls a job makes
(``backend.preannotation.ls_tasks.LabelStudioTasks``' interface), and the serving model wired to
the geometric fake segmenters."""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path

from segmentation_fakes import CONFIG, IMAGE_URL, BoxSegmenter, FakeImages, rectangle, task

from backend.label_studio_client import LabelStudioRefused, LabelStudioUnavailable
from backend.model import SegmentationModel
from backend.preannotation.job import run_preannotation_job
from backend.project_store import ProjectStore
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings

PROJECT_ID = "7"


class FakeLabelStudio:
    """Tasks of project 7 (and any others added) with their predictions; records what is stored.
    ``broken``: task ids whose reading Label Studio refuses (HTTP 400). ``down_for``: how many of
    the next calls find Label Studio down (connection refused)."""

    def __init__(self, tasks: list[dict] | None = None, broken=()):
        self.tasks = {t["id"]: copy.deepcopy(t) for t in tasks or []}
        self.broken = set(broken)
        self.down_for = 0
        self.created: list[dict] = []
        self.deleted: list[int] = []
        self.reads: list[int] = []
        self._next_prediction = 1000

    def _answer(self) -> None:
        if self.down_for > 0:
            self.down_for -= 1
            raise LabelStudioUnavailable("could not reach Label Studio (ConnectionError)")

    def label_config(self, project: str) -> str:
        self._answer()
        return CONFIG

    def task_ids(self, project: str, unlabeled_only: bool = False) -> list[int]:
        self._answer()
        return sorted(i for i, t in self.tasks.items() if str(t["project"]) == str(project)
                      and not (unlabeled_only and t["annotations"]))

    def task(self, task_id: int) -> dict:
        self.reads.append(task_id)
        self._answer()
        if task_id in self.broken:
            raise LabelStudioRefused(f"Label Studio answered HTTP 400 while reading task {task_id}", 400)
        if task_id not in self.tasks:
            raise LabelStudioRefused(f"Label Studio answered HTTP 404 while reading task {task_id}", 404)
        return copy.deepcopy(self.tasks[task_id])

    def create_prediction(self, task_id: int, entry: dict) -> int:
        self._answer()
        self._next_prediction += 1
        prediction = {"id": self._next_prediction, "task": task_id, **copy.deepcopy(entry)}
        self.tasks[task_id]["predictions"].append(prediction)
        self.created.append(prediction)
        return prediction["id"]

    def predictions(self, task_id: int) -> list[dict]:
        self._answer()
        return copy.deepcopy(self.tasks[task_id]["predictions"])

    def delete_prediction(self, prediction_id: int) -> bool:
        """False, as Label Studio's 404, for an id it does not hold."""
        self._answer()
        self.deleted.append(prediction_id)
        found = False
        for t in self.tasks.values():
            found = found or any(p.get("id") == prediction_id for p in t["predictions"])
            t["predictions"] = [p for p in t["predictions"] if p.get("id") != prediction_id]
        return found

    def predictions_of(self, task_id: int) -> list[dict]:
        return self.tasks[task_id]["predictions"]


def box_task(task_id: int, box=(20, 10, 80, 60), url=IMAGE_URL, project=7) -> dict:
    """A task imported with a detector's rectangle prediction."""
    body = task(task_id, url=url, predictions=[{"id": 500 + task_id, "model_version": "detector-v1",
                                                "result": [rectangle(*box)]}])
    body["project"] = project
    return body


def fake_model(model_dir: Path, images: FakeImages | None = None, **settings) -> SegmentationModel:
    """The serving model with geometric fake segmenters (SAM answers boxes with the box)."""
    segmenters = SegmenterSet(sam=BoxSegmenter("sam-fake", score=0.9), extreme=BoxSegmenter("extreme-fake", score=0.7),
                              sam_name="sam-fake", extreme_version="v1")
    config = replace(Settings(), model_dir=model_dir, **settings)
    return SegmentationModel(config, segmenters, images or FakeImages(), ProjectStore(model_dir / "projects"))


class SlowLabelStudio(FakeLabelStudio):
    """Each task takes ``delay_s`` to read: a job long enough to be killed in the middle."""

    def __init__(self, tasks, delay_s: float):
        super().__init__(tasks)
        self.delay_s = delay_s

    def task(self, task_id: int) -> dict:
        time.sleep(self.delay_s)
        return super().task(task_id)


SLOW_TASKS = 20


def slow_fake_preannotation(settings, job_id: str) -> None:
    """An embedded-worker target (spawned): pre-annotates SLOW_TASKS box tasks at 0.2 s each."""
    ls = SlowLabelStudio([box_task(i) for i in range(1, SLOW_TASKS + 1)], delay_s=0.2)
    run_preannotation_job(settings, job_id, model=fake_model(settings.model_dir), tasks_api=ls)


class SharedRunLocks:
    """Stands in for the Redis run lock (``backend.jobs.run_lock``) in one process: each project's
    lock is held by a holder id, which any number of its "processes" (chunks) may hold together."""

    def __init__(self):
        self.holders: dict[str, str] = {}

    def lock(self, layout, job, redis) -> "SharedRunLock":
        return SharedRunLock(self.holders, job.project, job.id)


class SharedRunLock:
    def __init__(self, holders: dict, project: str, holder: str):
        self._holders, self.project, self.holder = holders, project, holder

    def acquire(self, blocking: bool = True) -> None:
        from backend.jobs.run_lock import RunLockBusy

        if not self.refresh():
            raise RunLockBusy(self._holders[self.project])

    def refresh(self) -> bool:
        return self._holders.setdefault(self.project, self.holder) == self.holder

    def keep_alive(self) -> None:
        self.refresh()

    def release(self) -> None:
        if self._holders.get(self.project) == self.holder:
            del self._holders[self.project]
