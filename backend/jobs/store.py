"""Background jobs as JSON files under ``MODEL_DIR/active_learning/jobs``: the one place every
process (web workers, the embedded runner, RQ workers, /jobs) reads a job's state from.

Types (``types.py``): ``train`` (retrain a project's extreme-point model,
``backend.active_learning.training_job``) and ``preannotate`` (store brush predictions for a
project's tasks in Label Studio, ``backend.preannotation``).

States: queued -> running -> finished | failed | cancelled. ``cancel``: a queued job is cancelled at
once; a running pre-annotation job is asked to stop (``cancel_requested_at``) and stops at its next
task boundary, keeping the work done; a running training job (no boundary; minutes) cannot be. A job left "running" by a process that died (kill
-9, OOM, power loss) is found by ``JobStore.reap_dead`` — its pid is gone on this host, or its
heartbeat stopped — and ``abandon``-ed with that reason, so a restart picks the truth up from disk:
a job of a type that is not resumable fails (a training job: serving is unchanged); a resumable one
(pre-annotation, which keeps its progress per task on disk) goes back to the queue and resumes, up
to ``MAX_ATTEMPTS`` times. A shutdown (SIGTERM) is no death: a resumable job ``pause``s, attempts
unchanged.

A running job is ``stalled`` (a flag in ``/jobs``, not a state) when its progress (stage, count,
fraction) has not moved for ``STALLED_AFTER_S``: its workers are gone, or it waits for Label Studio.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from backend.files import file_lock, read_json, write_json_atomic
from backend.jobs.layout import JobLayout
from backend.jobs.types import TRAIN, job_type, known_type, load
from backend.project_store import project_id

log = logging.getLogger(__name__)

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = "queued", "running", "finished", "failed", "cancelled"
ENDED = (FINISHED, FAILED, CANCELLED)
# A running job rewrites its heartbeat this often; one silent for HEARTBEAT_STALE_S is dead.
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_STALE_S = 120.0
JOBS_KEPT_PER_PROJECT = 50
# Starts of a resumable job before a process death counts as the job failing (a task that kills
# its process every time must not loop forever).
MAX_ATTEMPTS = 3
# A running job whose progress has not moved for this long shows ``stalled`` in /jobs.
STALLED_AFTER_S = 600.0
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass
class Job:
    """One background job for one project.

    params: what the job works on (pre-annotation: ``tasks``, a list of task ids, and ``scope``:
    None, "unlabeled" or "all" of the project's tasks besides those).
    progress: {"stage": str, "fraction": 0..1, "message": str}, plus a pre-annotation job's counts.
    result: what the run produced: metrics before/after, whether (and which) version was published;
    a pre-annotation job's final counts.
    error: why the job failed; safe to show (no secrets, no payloads).
    attempts: how often a resumable job was started (see ``abandon``).
    progressed_at: when its progress last moved (stage, done count or fraction), see ``stalled``.
    """

    id: str
    project: str
    trigger: str
    type: str = TRAIN
    params: dict = field(default_factory=dict)
    state: str = QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    host: str | None = None
    pid: int | None = None
    progress: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    progressed_at: float | None = None
    cancel_requested_at: float | None = None

    @property
    def kind(self) -> str:
        """The job's type in words, for messages (a type this backend does not know, e.g. a newer
        version's, by its name)."""
        known = known_type(self.type)
        return known.words if known is not None else self.type

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "Job":
        return cls(**{key: value[key] for key in cls.__dataclass_fields__ if key in value})


def outcome_summary(job: Job) -> str:
    """One line on how the job ended (or "" while it runs): its type's summary of the result (a
    training job: published or not, with the figures), else the result's counts; or why it failed.
    For the log and the status page."""
    if job.state == FAILED:
        return f"failed: {job.error}"
    if job.state == CANCELLED:
        return "cancelled: " + ", ".join(f"{key} {value}" for key, value in job.result.items())
    if job.state != FINISHED:
        return ""
    known = known_type(job.type)
    summary = known.summary if known is not None else None
    if summary is not None:
        return load(summary)(job.result)
    return "finished: " + ", ".join(f"{key} {value}" for key, value in job.result.items())


class JobNotFound(KeyError):
    pass


class NotCancellable(ValueError):
    """The job cannot be cancelled (ended already, or running without task boundaries); the message says why."""


class JobStore:
    def __init__(self, layout: JobLayout):
        self.layout = layout
        # path -> ((inode, mtime), job or None if unreadable): the dispatcher lists jobs twice a second; files only change
        # by atomic replacement (a new inode), so unchanged ones need not be parsed again.
        self._parsed: dict[Path, tuple[tuple[int, int], Job | None]] = {}
        self._parsed_lock = threading.Lock()

    def create(self, project: str, trigger: str, type: str = TRAIN, params: dict | None = None,
               pid: int | None = None) -> Job:
        """A new queued job; with ``pid``, one already running in that process of this host (which
        no executor may start)."""
        project = project_id(project)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        job_type(type)  # KeyError for an unknown type, before anything is written
        kind = "" if type == TRAIN else f"{type}-"  # training jobs' ids kept their first form
        job = Job(id=f"p{project}-{kind}{stamp}-{secrets.token_hex(3)}", project=project, trigger=trigger, type=type,
                  params=dict(params or {}))
        if pid is not None:
            job.state, job.pid, job.host, job.attempts = RUNNING, pid, socket.gethostname(), 1
            job.started_at = job.heartbeat_at = job.created_at
        write_json_atomic(self._path(job.id), job.to_json())
        return job

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; JobNotFound also for a string that cannot name a job file (a NUL, a
        slash, hundreds of characters: ids this store makes are short and plain)."""
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(job_id)
        job = _parse(self._path(job_id))
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(self, project: str | None = None) -> list[Job]:
        """Jobs, oldest first; only ``project``'s when given."""
        if not self.layout.jobs_dir.is_dir():
            return []
        jobs = [job for path in self.layout.jobs_dir.glob("*.json") if (job := self._read(path)) is not None]
        if project is not None:
            project = project_id(project)
            jobs = [job for job in jobs if job.project == project]
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    def _read(self, path: Path) -> Job | None:
        try:
            stat = path.stat()
        except FileNotFoundError:  # pruned meanwhile
            return None
        signature = (stat.st_ino, stat.st_mtime_ns)
        with self._parsed_lock:
            cached = self._parsed.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        job = _parse(path)
        with self._parsed_lock:
            self._parsed[path] = (signature, job)
        return job

    def update(self, job_id: str, change: Callable[[Job], None]) -> Job:
        """Apply ``change`` to the job under its lock (read-modify-write across processes)."""
        with file_lock(self._path(job_id).with_suffix(".lock")):
            job = self.get(job_id)
            change(job)
            write_json_atomic(self._path(job_id), job.to_json())
            return job

    def mark_running(self, job_id: str, pid: int | None) -> Job:
        """``pid``: the one process running the job on this host; None for a job whose parts run in
        RQ workers anywhere (then its RQ parts, not a pid or heartbeat, tell whether it lives)."""

        def change(job: Job) -> None:
            if job.state in ENDED:  # cancelled before this process took it: it stays so
                return
            if job.state != RUNNING or job.pid != pid:  # not the process that started it confirming
                job.attempts += 1
                job.started_at = time.time()
            job.state, job.pid = RUNNING, pid
            job.host = socket.gethostname() if pid is not None else None
            job.heartbeat_at = job.progressed_at = time.time()
            job.error = None

        return self.update(job_id, change)

    def heartbeat(self, job_id: str, progress: dict | None = None) -> Job:
        def change(job: Job) -> None:
            job.heartbeat_at = time.time()
            if progress is not None:
                if _advance(progress) != _advance(job.progress):
                    job.progressed_at = job.heartbeat_at
                job.progress = progress

        return self.update(job_id, change)

    def finish(self, job_id: str, result: dict) -> Job:
        def change(job: Job) -> None:
            job.state, job.result, job.finished_at = FINISHED, result, time.time()
            job.progress = {**job.progress, "stage": "done", "fraction": 1.0}

        return self.update(job_id, change)

    def fail(self, job_id: str, reason: str) -> Job:
        """Mark the job failed with ``reason`` unless it already ended; a failed job's staged
        output (left behind by a killed process) is removed."""

        def change(job: Job) -> None:
            if job.state not in ENDED:
                job.state, job.error, job.finished_at = FAILED, reason, time.time()

        job = self.update(job_id, change)
        if job.state == FAILED:
            shutil.rmtree(self.layout.staging_dir(job.project, job.id), ignore_errors=True)
        return job

    def pause(self, job_id: str, message: str) -> Job:
        """Put a running resumable job back in the queue by choice (another job goes first); unlike
        ``abandon`` this does not count as a failed attempt."""

        def change(job: Job) -> None:
            if job.state == RUNNING and job.cancel_requested_at is not None:
                _cancelled(job)
            elif job.state == RUNNING:
                job.state, job.pid, job.host = QUEUED, None, None
                job.attempts = max(0, job.attempts - 1)  # its next start is this attempt's continuation
                job.progress = {**job.progress, "message": message}

        return self.update(job_id, change)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now; ask a running one of a resumable type to stop at its next task
        boundary (its process, or the chunk that gets there, then calls ``end_cancelled``). Raises
        NotCancellable for an ended job or a running training job."""
        self.get(job_id)  # JobNotFound before a lock file is made for it

        def change(job: Job) -> None:
            if job.state == QUEUED:
                _cancelled(job)
            elif job.state == RUNNING and getattr(known_type(job.type), "resumable", False):
                if job.cancel_requested_at is None:
                    job.cancel_requested_at = time.time()
                    job.progress = {**job.progress, "message": "cancelling: stops after the task in hand"}
            elif job.state == RUNNING:
                raise NotCancellable(f"a running {job.kind} job cannot be stopped midway; it ends by itself")
            elif job.state != CANCELLED:
                raise NotCancellable(f"the job has ended ({job.state})")

        return self.update(job_id, change)

    def end_cancelled(self, job_id: str, result: dict | None = None) -> Job:
        """A running job whose cancellation was asked for stopped: it is cancelled, with ``result``
        (the work it did)."""

        def change(job: Job) -> None:
            if job.state == RUNNING:
                _cancelled(job)
                job.result = dict(result or job.result)

        return self.update(job_id, change)

    def abandon(self, job_id: str, reason: str) -> Job:
        """A job whose process ended (or is ending) without reporting a result: a resumable job goes
        back to the queue to resume from its progress on disk, unless it has used up
        ``MAX_ATTEMPTS``; another fails with ``reason``."""

        def requeue(job: Job) -> None:
            if job.state == RUNNING:
                job.state, job.pid, job.host = QUEUED, None, None
                job.progress = {**job.progress, "message": f"resuming: {reason}"}

        job = self.get(job_id)
        if job.state == RUNNING and job.cancel_requested_at is not None:
            return self.end_cancelled(job_id)
        resumable = getattr(known_type(job.type), "resumable", False)  # an unknown type's job fails
        if resumable and job.attempts < MAX_ATTEMPTS:
            return self.update(job_id, requeue)
        if resumable:
            reason = f"{reason} ({job.attempts} attempts)"
        return self.fail(job_id, reason)

    def prune(self, keep_per_project: int = JOBS_KEPT_PER_PROJECT) -> None:
        """Delete all but the newest ``keep_per_project`` ended jobs of each project."""
        ended: dict[str, list[Job]] = {}
        for job in self.list():
            if job.state in ENDED:
                ended.setdefault(job.project, []).append(job)
        for jobs in ended.values():
            for job in jobs[:-keep_per_project]:
                self.delete(job.id)

    def delete(self, job_id: str) -> None:
        job = self._read(self._path(job_id))
        if job is not None:
            shutil.rmtree(self.layout.job_state_dir(job.project, job.id), ignore_errors=True)
        for path in (self._path(job_id), self._path(job_id).with_suffix(".lock")):
            path.unlink(missing_ok=True)
        with self._parsed_lock:
            self._parsed.pop(self._path(job_id), None)

    def first_queued(self, job: Job) -> bool:
        """Whether a job of a type that goes first (``JobType.first``) waits while ``job``, of
        another type, runs: ``job`` then pauses between its parts."""
        if job_type(job.type).first:
            return False
        return any(j.state == QUEUED and j.type != job.type and getattr(known_type(j.type), "first", False)
                   for j in self.list())

    def reap_dead(self, now: float | None = None) -> list[Job]:
        """``abandon`` every running job whose process is gone; returns them (requeued or failed)."""
        now = time.time() if now is None else now
        reaped = []
        for job in self.list():
            if job.state == RUNNING:
                reason = death_reason(job, now)
                if reason:
                    reaped.append(self.abandon(job.id, reason))
        return reaped

    def _path(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise JobNotFound(job_id)
        return self.layout.jobs_dir / f"{job_id}.json"


def _cancelled(job: Job) -> None:
    job.state, job.pid, job.host, job.finished_at = CANCELLED, None, None, time.time()
    job.progress = {**job.progress, "stage": "cancelled", "message": "cancelled; the work done is kept"}


def _advance(progress: dict) -> tuple:
    """What moves while a job gets on (not its messages or rates)."""
    return progress.get("stage"), progress.get("done"), progress.get("fraction")


def stalled(job: Job, now: float | None = None) -> bool:
    """Whether running ``job``'s progress has not moved for ``STALLED_AFTER_S``."""
    if job.state != RUNNING:
        return False
    since = job.progressed_at or job.started_at or job.created_at
    return (time.time() if now is None else now) - since > STALLED_AFTER_S


def death_reason(job: Job, now: float) -> str | None:
    """Why a job marked running in one process cannot be alive, or None if it may be."""
    if job.pid is None:  # its parts run in RQ workers: the RQ executor watches them
        return None
    if job.host == socket.gethostname() and not pid_alive(job.pid):
        return f"the {job.kind} process (pid {job.pid}) died without reporting a result (killed or crashed)"
    if job.heartbeat_at is not None and now - job.heartbeat_at > HEARTBEAT_STALE_S:
        return f"no heartbeat from the {job.kind} process on {job.host} for {now - job.heartbeat_at:.0f} s"
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _parse(path: Path) -> Job | None:
    """The job in ``path``; None when the file is gone or cannot be read as a job. A damaged or
    hand-edited file must not stop every other job from being listed or run: it is skipped with a
    warning and left on disk as it is."""
    try:
        value = read_json(path)
        return None if value is None else Job.from_json(value)
    except (ValueError, TypeError, KeyError) as exc:  # bad JSON, not an object, fields missing
        log.warning("job file %s cannot be read as a job and is skipped (%s)", path.name, exc.__class__.__name__)
        return None
