"""The Label Studio calls a pre-annotation job makes (``backend.label_studio_client``, with the Personal
Access Token of ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``): list a project's tasks, read one task
with its predictions and annotations, list a task's predictions, store a prediction, delete one.

Every failure is a ``LabelStudioError`` (``ProjectDataError``) whose class says whether it is transient,
the token, or about this task, and whose message says what to check and never holds the token.
"""

from __future__ import annotations

from backend.active_learning.ls_data import ProjectDataError
from backend.label_studio_client import SETTINGS_HINT, LabelStudioClient, LabelStudioRefused


class LabelStudioTasks:
    def __init__(self, settings, client: LabelStudioClient | None = None):
        self._client = client or LabelStudioClient.from_settings(settings)
        if not self._client.configured:
            raise ProjectDataError(f"pre-annotation reads tasks and stores predictions from Label Studio: {SETTINGS_HINT}")

    def label_config(self, project: str) -> str:
        return self._client.label_config(project)

    def task_ids(self, project: str, unlabeled_only: bool = False) -> list[int]:
        """Ids of the project's tasks in Label Studio's default order (by id); only tasks without
        annotations with ``unlabeled_only``."""
        return self._client.task_ids(project, unlabeled_only)

    def task(self, task_id: int) -> dict:
        """The task as /predict receives it: ``id``, ``project``, ``data``, ``predictions`` and
        ``annotations`` (lists of dicts with ``result``, ``model_version``, ...)."""
        task = self._client.task(task_id)
        if task.get("predictions") is None:  # a task serializer without them: ask for them
            task["predictions"] = self._client.predictions(task_id)
        return task

    def predictions(self, task_id: int) -> list[dict]:
        """The task's predictions as Label Studio holds them now (``id``, ``model_version``, ``result``, ...)."""
        return self._client.predictions(task_id)

    def create_prediction(self, task_id: int, entry: dict) -> int:
        """Store ``entry`` ({"result", "score", "model_version"}) as a prediction of the task; its id."""
        return self._client.create_prediction(task_id, entry)

    def delete_prediction(self, prediction_id: int) -> bool:
        """Delete a prediction; False when Label Studio has no prediction of that id (deleted meanwhile)."""
        try:
            self._client.delete_prediction(prediction_id)
        except LabelStudioRefused as exc:
            if exc.status == 404:
                return False
            raise
        return True
