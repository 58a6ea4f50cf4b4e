"""A pre-annotation job's work on disk: its plan (the task ids, in chunks) and each task's outcome,
so that a job resumes after a restart where it stopped, and ``/jobs`` can show done/total, rate,
ETA and the error of every task that failed.

    MODEL_DIR/active_learning/projects/<id>/jobs/<job id>/
      plan.json          {"chunks": [[task id, ...], ...], "planned_at": t}
      chunk-<n>.json     {"<task id>": {"outcome": ..., "message": ..., "at": t, "worker": "host:pid"}, ...}

A chunk is worked by one process at a time (the embedded worker, or one RQ worker), which
rewrites its chunk file atomically after every task; nothing else writes it.
"""

from __future__ import annotations

import os
import socket
import time

from backend.files import read_json, write_json_atomic
from backend.jobs.layout import JobLayout
from backend.jobs.rates import eta_s, per_minute

PREDICTED = "predicted"  # a prediction of the project's model version was stored
ALREADY_PREDICTED = "already_predicted"  # the task already held one: nothing to do
NO_PROMPTS = "no_prompts"  # no rectangle or keypoint in the task's predictions or annotations (nor a proposal)
FAILED = "failed"  # the message says why (image not loaded, Label Studio refused, ...)
OUTCOMES = (PREDICTED, ALREADY_PREDICTED, NO_PROMPTS, FAILED)
# Errors listed per task in /jobs (the count covers them all).
ERRORS_SHOWN = 100


class JobTasks:
    def __init__(self, layout: JobLayout, project: str, job_id: str):
        self.directory = layout.job_state_dir(project, job_id)

    def chunks(self) -> list[list[int]] | None:
        """The planned chunks of task ids, or None before planning."""
        plan = read_json(self.directory / "plan.json")
        return None if plan is None else plan["chunks"]

    def plan(self, task_ids: list[int], chunk_size: int) -> list[list[int]]:
        """Split ``task_ids`` into chunks of ``chunk_size`` and keep them (once: a resumed job keeps its plan)."""
        ids = list(dict.fromkeys(task_ids))
        chunks = [ids[start:start + chunk_size] for start in range(0, len(ids), chunk_size)]
        write_json_atomic(self.directory / "plan.json", {"chunks": chunks, "planned_at": time.time()})
        return chunks

    def outcomes(self, chunk: int) -> dict[int, dict]:
        """task id -> {"outcome", "message", "at", "worker"} for the tasks of ``chunk`` already worked."""
        return {int(task): value for task, value in (read_json(self._chunk_file(chunk), {}) or {}).items()}

    def record(self, chunk: int, task_id: int, outcome: str, message: str = "") -> None:
        done = self.outcomes(chunk)
        done[task_id] = {"outcome": outcome, "message": message, "at": time.time(), "worker": f"{socket.gethostname()}:{os.getpid()}"}
        write_json_atomic(self._chunk_file(chunk), {str(task): value for task, value in done.items()})

    def pending(self, chunk: int) -> list[int]:
        """The tasks of ``chunk`` without an outcome yet."""
        done = self.outcomes(chunk)
        return [task for task in self.chunks()[chunk] if task not in done]

    def summary(self, since: float, now: float | None = None) -> dict:
        """Counts per outcome, done/total, tasks per minute and ETA (from the tasks done since
        ``since``, the current run's start), and the failed tasks' errors."""
        now = time.time() if now is None else now
        chunks = self.chunks() or []
        total = sum(len(chunk) for chunk in chunks)
        outcomes = {task: value for index in range(len(chunks)) for task, value in self.outcomes(index).items()}
        counts = {name: 0 for name in OUTCOMES}
        for value in outcomes.values():
            counts[value["outcome"]] += 1
        recent = sum(1 for value in outcomes.values() if value["at"] >= since)
        rate = per_minute(recent, now - since)
        errors = {str(task): value["message"] for task, value in sorted(outcomes.items())
                  if value["outcome"] == FAILED}
        return {
            "done": len(outcomes), "total": total, "fraction": round(len(outcomes) / total, 4) if total else 1.0,
            **counts,
            "rate_per_min": rate,
            "eta_s": eta_s(total - len(outcomes), rate),
            "errors": dict(list(errors.items())[:ERRORS_SHOWN]),
            "message": f"{len(outcomes)}/{total} tasks, {counts[PREDICTED]} predicted, {counts[FAILED]} failed",
        }

    def complete(self) -> bool:
        chunks = self.chunks()
        return chunks is not None and all(not self.pending(index) for index in range(len(chunks)))

    def _chunk_file(self, chunk: int):
        return self.directory / f"chunk-{chunk:05d}.json"
