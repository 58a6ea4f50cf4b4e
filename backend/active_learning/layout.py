"""Where retraining state lives under ``MODEL_DIR``, beside the jobs' own (``backend.jobs.layout``):

    MODEL_DIR/active_learning/projects/<project id>/
      pending.json                  annotation events since the last job (see events.py)
      pending.lock, train.lock      short state lock; the training run lock (backend.jobs.run_lock)
      active.json                   {"version": name}: the version serving this project
      versions/<name>/              published weights + version.json (see versions.py)
      proposals.json                the last training job's word on the proposal model (proposal_training.py)
      staging/<job id>/             a training job's output before it is published (JobLayout)

(What ``/setup`` told about a project is in ``MODEL_DIR/projects/<project id>/``, ``ProjectStore``.)
"""

from __future__ import annotations

from pathlib import Path

from backend.jobs.layout import JobLayout


class Layout(JobLayout):
    def pending_file(self, project: str) -> Path:
        return self.project_dir(project) / "pending.json"

    def pending_lock(self, project: str) -> Path:
        return self.project_dir(project) / "pending.lock"

    def active_file(self, project: str) -> Path:
        return self.project_dir(project) / "active.json"

    def proposals_status_file(self, project: str) -> Path:
        return self.project_dir(project) / "proposals.json"

    def versions_dir(self, project: str) -> Path:
        return self.project_dir(project) / "versions"
