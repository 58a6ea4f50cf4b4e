"""Pre-annotation planning at scale: seconds from a job's start until its first task could be worked,
and for a whole pass of the runner over its chunks with the progress summaries it writes.

A job of ``--tasks`` task ids (an in-memory Label Studio lists them; no model, no image) is planned
through ``JobRun.plan`` as the embedded worker does, then the runner's loop asks each chunk for its
pending tasks and one task per chunk is recorded with a progress summary after it (as ``work``
reports, unthrottled). Run it against any checkout (``--checkout``) to compare versions.

    .venv/bin/python bench/preannotation_planning.py [--tasks 100000] [--chunk 16] [--checkout DIR]

Prints the figures. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ListingOnly:
    """The Label Studio call planning makes."""

    def __init__(self, count: int):
        self.count = count

    def task_ids(self, project: str, unlabeled_only: bool = False) -> list[int]:
        return list(range(1, self.count + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--summaries", type=int, default=200, help="chunks whose first task is recorded and reported")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the backend checkout to measure (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout))
    from backend.jobs.layout import JobLayout
    from backend.jobs.store import JobStore
    from backend.jobs.types import PREANNOTATE
    from backend.preannotation.job import JobRun
    from backend.preannotation.progress import PREDICTED
    from backend.settings import Settings

    with tempfile.TemporaryDirectory() as model_dir:
        settings = Settings(model_dir=Path(model_dir), preannotate_chunk_tasks=args.chunk,
                            **({"preannotate_max_tasks": args.tasks} if "preannotate_max_tasks" in
                               Settings.__dataclass_fields__ else {}))
        jobs = JobStore(JobLayout(settings.model_dir))
        job = jobs.mark_running(jobs.create("7", "bench", PREANNOTATE, {"tasks": [], "scope": "all"}).id, None)
        run = JobRun(settings, jobs, job, ListingOnly(args.tasks))
        started = time.perf_counter()
        chunks = run.plan()
        first = next(chunk for chunk in range(len(chunks)) if run.tasks.pending(chunk))
        planned_s = time.perf_counter() - started
        started = time.perf_counter()
        for chunk in range(len(chunks)):
            pending = run.tasks.pending(chunk)
            if chunk < args.summaries:
                run.tasks.record(chunk, pending[0], PREDICTED)
                run.tasks.summary(since=0)
        pass_s = time.perf_counter() - started
    print(f"checkout {args.checkout}: {args.tasks} tasks in {len(chunks)} chunks of {args.chunk}")
    print(f"  planned, first chunk {first} ready: {planned_s:.2f} s")
    print(f"  pass over every chunk's pending tasks, {min(args.summaries, len(chunks))} records with a summary each: "
          f"{pass_s:.2f} s")


if __name__ == "__main__":
    main()
