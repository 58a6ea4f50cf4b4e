"""Where background jobs live under ``MODEL_DIR`` (shared by every gunicorn worker, replica and job
worker; nothing is kept only in memory). The paths are those of the retraining loop, where jobs
began, so state written before ``backend/jobs`` existed is read as it is:

    MODEL_DIR/active_learning/
      dispatcher.lock                 held by the one process per MODEL_DIR that starts jobs
      jobs/<job id>.json              one job each, any type (see store.py)
      projects/<project id>/
        staging/<job id>/             a job's output before it is published (removed when it fails)
        jobs/<job id>/                a job's own working state (a pre-annotation job's plan and outcomes)

A feature adds its own per-project files beside these (``backend.active_learning.layout``).
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.project_store import project_dir

_PROJECT_DIR = re.compile(r"^[0-9]+$")


class JobLayout:
    def __init__(self, model_dir: Path):
        self.root = Path(model_dir) / "active_learning"

    @property
    def dispatcher_lock(self) -> Path:
        return self.root / "dispatcher.lock"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    def project_dir(self, project: str) -> Path:
        return project_dir(self.projects_dir, project)

    def staging_dir(self, project: str, job_id: str) -> Path:
        return self.project_dir(project) / "staging" / job_id

    def job_state_dir(self, project: str, job_id: str) -> Path:
        return self.project_dir(project) / "jobs" / job_id

    def projects(self) -> list[str]:
        """Ids of every project with state on disk."""
        if not self.projects_dir.is_dir():
            return []
        return sorted((p.name for p in self.projects_dir.iterdir() if _PROJECT_DIR.match(p.name)), key=int)
