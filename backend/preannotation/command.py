"""``python -m backend preannotate --project ID [--tasks 1,2,3] [--unlabeled]``: pre-annotate a
project's tasks in this process, with a progress bar.

The same job as one started by an import or ``POST /jobs``: it is listed in ``GET /jobs``, waits
while another pre-annotation run works the project (run it with the backend's REDIS_URL, so both
use the same lock), skips tasks that already hold a prediction of the project's model version,
and records every task's outcome. Reads settings (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, SAM_CHECKPOINT, MODEL_DIR, ...)
from the environment, like the backend. Interrupted (Ctrl-C), the job ends as failed; running the
command again continues with the tasks not predicted yet.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from backend.jobs.layout import JobLayout
from backend.jobs.store import FINISHED, JobStore
from backend.jobs.types import PREANNOTATE
from backend.preannotation.job import run_preannotation_job, serving_model
from backend.preannotation.progress import ALREADY_PREDICTED, FAILED, NO_PROMPTS, PREDICTED
from backend.project_store import ProjectIdError, project_id
from backend.settings import Settings

ERRORS_PRINTED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, help="Label Studio project id")
    parser.add_argument("--tasks", type=task_ids, help="comma-separated task ids (default: every task of the project)")
    parser.add_argument("--unlabeled", action="store_true", help="only the project's tasks without annotations")


def task_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tasks must be comma-separated task ids, got {text[:60]!r}") from None
    if not ids or min(ids) < 1:
        raise argparse.ArgumentTypeError("--tasks must list positive task ids")
    return ids


class ProgressBar:
    """tqdm over the job's tasks, counting outcomes in its postfix."""

    def __init__(self):
        self._bar = None
        self._counts = {PREDICTED: 0, ALREADY_PREDICTED: 0, NO_PROMPTS: 0, FAILED: 0}

    def planned(self, total: int, done: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=done, unit="task", desc="pre-annotating", file=sys.stderr)

    def task_done(self, outcome: str) -> None:
        self._counts[outcome] += 1
        self._bar.set_postfix({key.replace("_", " "): value for key, value in self._counts.items()}, refresh=False)
        self._bar.update(1)

    def waiting(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)  # a line above the bar

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        project = project_id(args.project)
    except ProjectIdError:
        print(f"--project must be a Label Studio project id, got {args.project!r}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    jobs = JobStore(JobLayout(settings.model_dir))
    params = {"tasks": sorted(set(args.tasks or [])),
              "scope": None if args.tasks else ("unlabeled" if args.unlabeled else "all")}
    job = jobs.create(project, "python -m backend preannotate", PREANNOTATE, params, pid=os.getpid())
    print(f"job {job.id} (GET /jobs/{job.id}); loading the segmenters", file=sys.stderr)
    bar = ProgressBar()
    try:
        run_preannotation_job(settings, job.id, model=serving_model(settings), progress=bar)
    except KeyboardInterrupt:
        jobs.fail(job.id, "interrupted (Ctrl-C); run the command again to continue with the tasks not predicted yet")
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        bar.close()
    job = jobs.get(job.id)
    if job.state != FINISHED:
        print(f"job {job.id} {job.state}: {job.error}", file=sys.stderr)
        return 1
    result = job.result
    print(f"job {job.id}: {result['total']} tasks, {result[PREDICTED]} predicted ({result['model_version']}), "
          f"{result[ALREADY_PREDICTED]} already predicted, {result[NO_PROMPTS]} without prompts, "
          f"{result[FAILED]} failed")
    for task, error in list(job.progress.get("errors", {}).items())[:ERRORS_PRINTED]:
        print(f"  task {task}: {error}")
    return 0
