"""The body of one training job: read the project's annotations from Label Studio, hold out
validation tasks, evaluate the serving version on them, fine-tune it, evaluate the result, and
publish the result as the project's next version only if it is not worse.

Runs in its own process (the embedded runner spawns one per job; an RQ worker runs it in its
work-horse), never in a web worker. Whatever happens, the job file says so: finished with its
metrics, or failed with a reason. A kill -9 cannot be caught: the job is then found dead by its
pid/heartbeat (``JobStore.reap_dead``), and the version pointer was never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from backend.active_learning.jobs import FINISHED, HEARTBEAT_INTERVAL_S, JobStore, outcome_summary
from backend.active_learning.layout import Layout
from backend.active_learning.ls_data import LabelStudioProjectReader, ProjectDataError
from backend.active_learning.split import NotEnoughTasks, split_tasks
from backend.active_learning.trainer import ExtremeTrainer, Trainer
from backend.active_learning.training_lock import TrainingLock
from backend.active_learning.versions import VersionError, VersionRegistry, verify_files
from backend.images import ImageError

logger = logging.getLogger(__name__)

# Share of the job's progress bar per stage.
STAGES = {"waiting": (0.0, 0.0), "fetching": (0.0, 0.2), "evaluating": (0.2, 0.3), "training": (0.3, 0.9),
          "checking": (0.9, 0.97), "publishing": (0.97, 1.0)}
PROGRESS_WRITE_INTERVAL_S = 1.0
# Errors whose messages are written for users; anything else is reported with its type too.
EXPECTED_ERRORS = (ProjectDataError, VersionError, ImageError, NotEnoughTasks)


class Stopped(BaseException):
    """SIGTERM arrived (worker shutdown): the job ends as failed instead of vanishing."""


@dataclass(frozen=True)
class JobContext:
    job_id: str
    project: str
    registry: VersionRegistry


class Progress:
    """Writes {"stage", "fraction", "message"} to the job file, at most once per second."""

    def __init__(self, jobs: JobStore, job_id: str):
        self._jobs, self._job_id, self._written_at = jobs, job_id, 0.0

    def __call__(self, stage: str, done: float, message: str = "") -> None:
        low, high = STAGES[stage]
        value = {"stage": stage, "fraction": round(low + (high - low) * min(max(done, 0.0), 1.0), 4), "message": message}
        now = time.monotonic()
        if now - self._written_at >= PROGRESS_WRITE_INTERVAL_S or done >= 1.0:
            self._written_at = now
            self._jobs.heartbeat(self._job_id, value)


class Heartbeat:
    """A daemon thread stamping the job's heartbeat (and refreshing the Redis training lock)."""

    def __init__(self, jobs: JobStore, job_id: str):
        self._jobs, self._job_id = jobs, job_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)
        self.lock: TrainingLock | None = None

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self._jobs.heartbeat(self._job_id)
                if self.lock is not None:
                    self.lock.refresh()
            except Exception:  # a missed beat is not fatal; the next one may succeed
                logger.warning("heartbeat of job %s failed", self._job_id, exc_info=True)


def run_training_job(settings, job_id: str, trainer: Trainer | None = None, reader=None) -> None:
    """Run job ``job_id`` to its end; its outcome is written to the job file and logged, never raised."""
    layout = Layout(settings.model_dir)
    jobs = JobStore(layout)
    job = jobs.mark_running(job_id, os.getpid())
    context = JobContext(job_id, job.project, VersionRegistry.from_settings(settings))
    progress = Progress(jobs, job_id)
    staging = layout.staging_dir(job.project, job_id)
    try:
        with failures_recorded(jobs, job_id, EXPECTED_ERRORS):
            try:
                with Heartbeat(jobs, job_id) as heartbeat:
                    progress("waiting", 0.0, "waiting for the project's previous job to end")
                    with TrainingLock(layout, job.project, settings.redis_url) as lock:
                        heartbeat.lock = lock
                        result = _train_and_publish(
                            context, settings, trainer or ExtremeTrainer.from_settings(settings),
                            reader or LabelStudioProjectReader(settings), progress, staging,
                        )
                if result["published"]:
                    result.update(_refresh_predictions(settings, jobs, job.project, result["version"]))
                jobs.finish(job_id, result)
            except Stopped:
                jobs.fail(job_id, "stopped by SIGTERM (worker shutdown) before finishing; serving is unchanged")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    job = jobs.get(job_id)
    log = logger.info if job.state == FINISHED else logger.warning
    log("training job %s for project %s %s", job_id, job.project, outcome_summary(job))


@contextlib.contextmanager
def failures_recorded(jobs: JobStore, job_id: str, expected_errors: tuple) -> Iterator[None]:
    """The body of a job process: SIGTERM becomes ``Stopped`` inside (for the body to handle), and any
    error ends the job as failed: with its message for ``expected_errors`` (written for users), with
    its type and a logged traceback otherwise. Nothing is raised."""
    previous_sigterm = raise_on_sigterm()
    try:
        yield
    except expected_errors as exc:
        jobs.fail(job_id, str(exc))
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        jobs.fail(job_id, f"{type(exc).__name__}: {str(exc)[:500]}")
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _train_and_publish(context: JobContext, settings, trainer: Trainer, reader, progress: Callable, staging) -> dict:
    project = context.project
    progress("fetching", 0.0, "reading annotations from Label Studio")
    data = reader.read(project, progress=lambda done, total: progress("fetching", done / total, f"task {done}/{total}"))
    train_tasks, val_tasks = split_tasks(data.tasks)
    train = [sample for task in train_tasks for sample in task.samples]
    val = [sample for task in val_tasks for sample in task.samples]
    base = context.registry.serving(project)
    name = context.registry.next_name(project)
    summary = {
        "parent": base.name, "train_tasks": len(train_tasks), "val_tasks": len(val_tasks),
        "train_instances": len(train), "val_instances": len(val), "skipped_tasks": data.skipped[:20],
    }

    progress("evaluating", 0.0, f"mIoU of {base.name} on {len(val)} held-out instances")
    before = trainer.evaluate(base.path, val)
    progress("evaluating", 1.0, f"{base.name}: mIoU {before:.4f}")

    steps = settings.train_steps
    files = trainer.fine_tune(
        train, val, base.path, staging, steps, name,
        lambda step, total, message: progress("training", step / total, f"step {step}/{total} {message}".strip()),
    )
    verify_files(staging, files, "the trained checkpoint")  # a torn or damaged write stops here
    progress("checking", 0.0, f"mIoU of the fine-tuned model on {len(val)} held-out instances")
    after = trainer.evaluate(staging, val)
    metrics = {"miou_before": round(before, 4), "miou_after": round(after, 4), "steps": steps, **summary}
    if after < before:
        progress("checking", 1.0, "not published: held-out mIoU would fall")
        return {"published": False, "version": None, **metrics,
                "reason": f"held-out mIoU fell from {before:.4f} ({base.name}) to {after:.4f}; {base.name} keeps serving"}
    progress("publishing", 0.0, f"publishing {name}")
    version = context.registry.publish(project, name, staging, files, parent=base.name, metrics=metrics, job=context.job_id)
    progress("publishing", 1.0, f"{version.name} serves project {project}")
    return {"published": True, "version": version.name, **metrics}


def _refresh_predictions(settings, jobs: JobStore, project: str, version: str) -> dict:
    """With ``preannotate_on_import`` on, a published version queues pre-annotation of the project's
    unlabeled tasks, so their predictions come from it without a click. What happened, for the result."""
    from backend.active_learning.queue import make_executor
    from backend.preannotation.trigger import request_preannotation
    from backend.project_options import ProjectOptions
    from backend.project_store import ProjectStore

    setup = ProjectStore.in_model_dir(settings.model_dir).load(project)
    if not ProjectOptions.for_project(settings.default_options, setup).preannotate_on_import:
        return {}
    try:
        job, _ = request_preannotation(jobs, make_executor(settings, jobs), project, f"new model version {version}",
                                       scope="unlabeled")
    except Exception as exc:  # the version is published either way
        logger.exception("could not queue pre-annotation with %s for project %s", version, project)
        return {"preannotation_error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"preannotation_job": job.id}


def raise_on_sigterm():
    """Turn SIGTERM into Stopped (main thread only; returns the previous handler, or None)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise Stopped()

    return signal.signal(signal.SIGTERM, stop)
