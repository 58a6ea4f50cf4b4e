"""Fakes for the active-learning tests: a trainer whose "weights" are one number, a Label Studio
reader with tiny in-memory tasks, and job targets for spawned processes (importable by name, as
``multiprocessing`` spawn needs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from backend.checksums import sha256_of
from backend.active_learning.ls_data import AnnotatedTask, ProjectData
from backend.active_learning.training_job import run_training_job
from backend.project_store import ProjectSetup, ProjectStore

WEIGHTS = "weights.json"


def write_fake_weights(directory: Path, quality: float, version: str = "base-v0") -> Path:
    """A weights directory the fakes understand: its quality is the mIoU the FakeTrainer reports."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WEIGHTS).write_text(json.dumps({"quality": quality}))
    (directory / "manifest.json").write_text(json.dumps({"version": version}))
    return directory


def fake_quality(directory: Path) -> float:
    return json.loads((Path(directory) / WEIGHTS).read_text())["quality"]


class FakeTrainer:
    """fine_tune adds ``gain`` to the quality (negative: gets worse), optionally slowly, and with
    ``corrupt`` changes the weights file after reporting its checksum (a damaged write)."""

    def __init__(self, gain: float = 0.1, step_delay_s: float = 0.0, corrupt: bool = False):
        self.gain, self.step_delay_s, self.corrupt = gain, step_delay_s, corrupt
        self.calls: list[dict] = []

    def scores(self, weights_dir, samples) -> list[float]:
        assert len(samples) > 0
        return [fake_quality(weights_dir)] * len(samples)

    def masks(self, weights_dir, samples) -> list:
        """The annotators' own masks: no policy has anything to fix."""
        return [mask.copy() for _, mask in samples]

    def fine_tune(self, train, init_weights_dir, out_dir, steps, version, progress) -> dict:
        self.calls.append({"init": Path(init_weights_dir), "train": len(train), "steps": steps, "version": version})
        for step in range(1, steps + 1):
            time.sleep(self.step_delay_s)
            progress(step, steps, "")
        write_fake_weights(Path(out_dir), fake_quality(init_weights_dir) + self.gain, version)
        files = {name: sha256_of(Path(out_dir) / name) for name in (WEIGHTS, "manifest.json")}
        if self.corrupt:
            (Path(out_dir) / WEIGHTS).write_text('{"quality": 0.9}')  # readable, but not what was reported
        return files


def fake_task(task_id: int, instances: int = 1) -> AnnotatedTask:
    image = np.full((8, 8, 3), task_id % 255, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    return AnnotatedTask(task_id, 1000 + task_id, [(image, mask)] * instances, ["Cat"] * instances)


def connect(settings, *projects) -> None:
    """Store a setup for each of ``projects`` as ``/setup`` does (Label Studio calls it whenever a model
    is connected): retraining acts only for projects that sent one."""
    store = ProjectStore.in_model_dir(settings.model_dir)
    for project in projects:
        store.save(ProjectSetup(str(project), "<View/>", {}, "test"))


class RecordingExecutor:
    """An executor that only records the ids of the jobs submitted to it."""

    def __init__(self):
        self.submitted = []

    def submit(self, job):
        self.submitted.append(job.id)

    def poll(self):
        pass


class FakeReader:
    def __init__(self, task_ids=range(1, 11)):
        self.task_ids = list(task_ids)
        self.reads: list[str] = []

    def read(self, project, progress=lambda done, total: None) -> ProjectData:
        self.reads.append(project)
        for done in range(1, len(self.task_ids) + 1):
            progress(done, len(self.task_ids))
        return ProjectData(tasks=[fake_task(t) for t in self.task_ids], skipped=[])


def slow_fake_job(settings, job_id: str) -> None:
    """A job that trains for about 30 s in small steps (long enough to be killed mid-training)."""
    run_training_job(settings, job_id, trainer=FakeTrainer(step_delay_s=0.1), reader=FakeReader())


def quick_fake_job(settings, job_id: str) -> None:
    run_training_job(settings, job_id, trainer=FakeTrainer(), reader=FakeReader())


def wait_for(condition, timeout_s: float, tick=lambda: None):
    """``condition()``'s first truthy value, calling ``tick()`` before each try; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tick()
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")
