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
        self._complete: set[int] = set()  # chunks with an outcome for every task: they never change
        self._counts = {name: 0 for name in OUTCOMES}
        self._times: list[float] = []  # when each outcome was recorded (the rate)
        self._errors: dict[str, str] = {}  # the first ERRORS_SHOWN failed tasks' messages
        self._complete_upto = 0  # chunks before this one are complete

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
            self._load(chunk, (self.directory / self._legacy_name(chunk)).exists())
        self._read_new_lines(chunk)
        return self._outcomes[chunk]

    def _refresh(self) -> None:
        """Every chunk's outcomes as they are now: one listing of the folder, then only the files
        of chunks not complete yet, from where they were last read."""
        chunks = self.chunks() or []
        try:
            names = set(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for chunk in range(len(chunks)):
            if chunk in self._complete:
                continue
            if chunk not in self._outcomes:
                self._load(chunk, self._legacy_name(chunk) in names)
            if _chunk_name(chunk) in names:
                self._read_new_lines(chunk)
            if len(self._outcomes[chunk]) >= len(chunks[chunk]):
                self._complete.add(chunk)

    def _load(self, chunk: int, legacy: bool) -> None:
        self._outcomes[chunk], self._read_to[chunk] = {}, 0
        if legacy:  # a job planned before outcomes were appended
            for task, value in (read_json(self.directory / self._legacy_name(chunk), {}) or {}).items():
                self._add(chunk, int(task), value)

    def _add(self, chunk: int, task: int, value: dict) -> None:
        before = self._outcomes[chunk].get(task)
        if before is not None:
            self._counts[before["outcome"]] -= 1
        self._outcomes[chunk][task] = value
        self._counts[value["outcome"]] += 1
        self._times.append(value["at"])
        if value["outcome"] == FAILED and len(self._errors) < ERRORS_SHOWN:
            self._errors[str(task)] = value["message"]

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
                task = int(value.pop("task"))
                if value["outcome"] not in OUTCOMES:
                    continue
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a torn line: its task has no outcome and is worked again
            self._add(chunk, task, value)
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
        self._refresh()
        total = sum(len(chunk) for chunk in self.chunks() or [])
        done = sum(self._counts.values())
        rate = per_minute(sum(1 for at in self._times if at >= since), now - since)
        not_planned = self.not_planned()
        over = f"; {not_planned} tasks over PREANNOTATE_MAX_TASKS not planned" if not_planned else ""
        return {
            "done": done, "total": total, "fraction": round(done / total, 4) if total else 1.0,
            **self._counts,
            "not_planned": not_planned,
            "rate_per_min": rate,
            "eta_s": eta_s(total - done, rate),
            "errors": dict(self._errors),
            "message": f"{done}/{total} tasks, {self._counts[PREDICTED]} predicted, {self._counts[FAILED]} failed{over}",
        }

    def complete(self) -> bool:
        chunks = self.chunks()
        if chunks is None:
            return False
        while self._complete_upto < len(chunks) and not self.pending(self._complete_upto):
            self._complete_upto += 1
        return self._complete_upto == len(chunks)

    @staticmethod
    def _legacy_name(chunk: int) -> str:
        return f"chunk-{chunk:05d}.json"

    def _chunk_file(self, chunk: int) -> Path:
        return self.directory / _chunk_name(chunk)


def _chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:05d}.jsonl"

