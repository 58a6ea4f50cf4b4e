"""A pre-annotation job's work on disk: its plan (the task ids, in chunks) and each task's outcome,
so that a job resumes after a restart where it stopped, and ``/jobs`` can show done/total, rate,
ETA and the error of every task that failed.

    MODEL_DIR/active_learning/projects/<id>/jobs/<job id>/
      plan.json          {"chunks": [[task id, ...], ...], "planned_at": t, "not_planned": n}
      chunk-<n>.jsonl    one line per task worked: {"task": id, "outcome": ..., "message": ..., "at": t, "worker": "host:pid"}

A chunk is worked by one process at a time (the embedded worker, or one RQ worker), which appends a
line per task (a torn last line, from a kill mid-write, is ignored: that task is worked again). Jobs
planned before this format keep their ``chunk-<n>.json`` ({"<task id>": {...}}), read as well.

Everything is linear in the job's size: the plan is read once per process (it never changes), and
each chunk file is read only from where this process last read it, when it grew.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

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
        self._plan: dict | None = None
        self._outcomes: dict[int, dict[int, dict]] = {}  # chunk -> task id -> outcome
        self._read_to: dict[int, int] = {}  # chunk -> bytes of its file read
        self._complete_upto = 0  # chunks before this one have an outcome for every task

    def chunks(self) -> list[list[int]] | None:
        """The planned chunks of task ids, or None before planning."""
        if self._plan is None:
            self._plan = read_json(self.directory / "plan.json")
        return None if self._plan is None else self._plan["chunks"]

    def not_planned(self) -> int:
        """How many of the job's tasks were over PREANNOTATE_MAX_TASKS and left out of its plan."""
        return (self._plan or {}).get("not_planned", 0) if self.chunks() is not None else 0

    def plan(self, task_ids: list[int], chunk_size: int, max_tasks: int | None = None,
             left_out: int = 0) -> list[list[int]]:
        """Split ``task_ids`` (the first ``max_tasks`` of them, duplicates dropped) into chunks of
        ``chunk_size`` and keep them (once: a resumed job keeps its plan). ``left_out``: tasks the
        request already left out (``over_cap``), reported with those beyond ``max_tasks``."""
        ids = list(dict.fromkeys(task_ids))
        kept = ids if max_tasks is None else ids[:max_tasks]
        chunks = [kept[start:start + chunk_size] for start in range(0, len(kept), chunk_size)]
        self._plan = {"chunks": chunks, "planned_at": time.time(), "not_planned": left_out + len(ids) - len(kept)}
        write_json_atomic(self.directory / "plan.json", self._plan)
        return chunks

    def outcomes(self, chunk: int) -> dict[int, dict]:
        """task id -> {"outcome", "message", "at", "worker"} for the tasks of ``chunk`` already worked."""
        if chunk not in self._outcomes:
            legacy = read_json(self.directory / f"chunk-{chunk:05d}.json", {}) or {}
            self._outcomes[chunk] = {int(task): value for task, value in legacy.items()}
            self._read_to[chunk] = 0
        self._read_new_lines(chunk)
        return self._outcomes[chunk]

    def _read_new_lines(self, chunk: int) -> None:
        path = self._chunk_file(chunk)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size <= self._read_to[chunk]:
            return
        with open(path, "rb") as file:
            file.seek(self._read_to[chunk])
            data = file.read(size - self._read_to[chunk])
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written (or torn) waits
        for line in complete.splitlines():
            try:
                value = json.loads(line)
                self._outcomes[chunk][int(value.pop("task"))] = value
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a torn line: its task has no outcome and is worked again
        self._read_to[chunk] += len(complete)

    def record(self, chunk: int, task_id: int, outcome: str, message: str = "") -> None:
        value = {"outcome": outcome, "message": message, "at": time.time(), "worker": f"{socket.gethostname()}:{os.getpid()}"}
        line = json.dumps({"task": task_id, **value}).encode() + b"\n"
        path = self._chunk_file(chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def pending(self, chunk: int) -> list[int]:
        """The tasks of ``chunk`` without an outcome yet."""
        done = self.outcomes(chunk)
        return [task for task in self.chunks()[chunk] if task not in done]

    def summary(self, since: float, now: float | None = None) -> dict:
        """Counts per outcome, done/total, tasks per minute and ETA (from the tasks done since
        ``since``, the current run's start), the failed tasks' errors, and how many tasks were
        over PREANNOTATE_MAX_TASKS (``not_planned``)."""
        now = time.time() if now is None else now
        chunks = self.chunks() or []
        total = sum(len(chunk) for chunk in chunks)
        counts = {name: 0 for name in OUTCOMES}
        done = recent = 0
        errors: dict[str, str] = {}
        for index in range(len(chunks)):
            for task, value in self.outcomes(index).items():
                done += 1
                counts[value["outcome"]] += 1
                recent += value["at"] >= since
                if value["outcome"] == FAILED and len(errors) < ERRORS_SHOWN:
                    errors[str(task)] = value["message"]
        rate = per_minute(recent, now - since)
        not_planned = self.not_planned()
        over = f"; {not_planned} tasks over PREANNOTATE_MAX_TASKS not planned" if not_planned else ""
        return {
            "done": done, "total": total, "fraction": round(done / total, 4) if total else 1.0,
            **counts,
            "not_planned": not_planned,
            "rate_per_min": rate,
            "eta_s": eta_s(total - done, rate),
            "errors": errors,
            "message": f"{done}/{total} tasks, {counts[PREDICTED]} predicted, {counts[FAILED]} failed{over}",
        }

    def complete(self) -> bool:
        chunks = self.chunks()
        if chunks is None:
            return False
        while self._complete_upto < len(chunks) and not self.pending(self._complete_upto):
            self._complete_upto += 1
        return self._complete_upto == len(chunks)

    def _chunk_file(self, chunk: int) -> Path:
        return self.directory / f"chunk-{chunk:05d}.jsonl"
