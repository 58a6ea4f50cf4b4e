"""Where active-learning state lives under ``MODEL_DIR`` (shared by every gunicorn worker, replica
and training worker; nothing is kept only in memory):

    MODEL_DIR/active_learning/
      dispatcher.lock                 held by the one process per MODEL_DIR that starts jobs
      jobs/<job id>.json              one training job each (see jobs.py)
      projects/<project id>/
        pending.json                  annotation events since the last job (see events.py)
        pending.lock, train.lock      short state lock; held for a whole training run
        active.json                   {"version": name}: the version serving this project
        versions/<name>/              published weights + version.json (see versions.py)
        staging/<job id>/             a job's training output before it is published
        jobs/<job id>/                a pre-annotation job's plan and per-task outcomes

(What ``/setup`` told about a project is in ``MODEL_DIR/projects/<project id>/``, ``ProjectStore``.)
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.project_store import project_dir

_PROJECT_DIR = re.compile(r"^[0-9]+$")


class Layout:
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

    def pending_file(self, project: str) -> Path:
        return self.project_dir(project) / "pending.json"

    def pending_lock(self, project: str) -> Path:
        return self.project_dir(project) / "pending.lock"

    def train_lock(self, project: str) -> Path:
        return self.project_dir(project) / "train.lock"

    def active_file(self, project: str) -> Path:
        return self.project_dir(project) / "active.json"

    def versions_dir(self, project: str) -> Path:
        return self.project_dir(project) / "versions"

    def staging_dir(self, project: str, job_id: str) -> Path:
        return self.project_dir(project) / "staging" / job_id

    def job_state_dir(self, project: str, job_id: str) -> Path:
        return self.project_dir(project) / "jobs" / job_id

    def projects(self) -> list[str]:
        """Ids of every project with state on disk."""
        if not self.projects_dir.is_dir():
            return []
        return sorted((p.name for p in self.projects_dir.iterdir() if _PROJECT_DIR.match(p.name)), key=int)
