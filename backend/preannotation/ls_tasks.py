"""The Label Studio calls a pre-annotation job makes, through ``label_studio_sdk`` with the Personal
Access Token (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``): list a project's tasks, read one task
with its predictions and annotations, store a prediction, delete one.

Every failure is a ``ProjectDataError`` whose message says what to check and never holds the token.
"""

from __future__ import annotations

from backend.active_learning.ls_data import LabelStudioApi

PAGE_SIZE = 100


class LabelStudioTasks:
    def __init__(self, settings, client=None):
        self._api = LabelStudioApi(settings, "pre-annotation reads tasks and stores predictions", client)
        self._client = self._api.client

    def label_config(self, project: str) -> str:
        return self._api.call(f"reading project {project}", lambda: self._client.projects.get(id=int(project)).label_config)

    def task_ids(self, project: str, unlabeled_only: bool = False) -> list[int]:
        """Ids of the project's tasks in Label Studio's default order (by id); only tasks without
        annotations with ``unlabeled_only``."""
        ids, page = [], 1
        while True:
            listing = self._api.call(f"listing project {project}'s tasks (page {page})", lambda: self._client.tasks.list(
                project=int(project), page=page, page_size=PAGE_SIZE))
            tasks = listing.items or []
            ids += [task.id for task in tasks if not (unlabeled_only and (task.total_annotations or task.is_labeled))]
            if not tasks or page * PAGE_SIZE >= listing.response.total:
                return sorted(ids)
            page += 1

    def task(self, task_id: int) -> dict:
        """The task as /predict receives it: ``id``, ``project``, ``data``, ``predictions`` and
        ``annotations`` (lists of dicts with ``result``, ``model_version``, ...)."""
        from label_studio_sdk.core.jsonable_encoder import jsonable_encoder

        task = self._api.call(f"reading task {task_id}", lambda: self._client.tasks.get(id=str(task_id)))
        value = jsonable_encoder(task)  # as Label Studio sent it: times as strings, nested objects as dicts
        if value.get("predictions") is None:  # a task serializer without them: ask for them
            predictions = self._api.call(f"reading task {task_id}'s predictions",
                                         lambda: self._client.predictions.list(task=task_id))
            value["predictions"] = jsonable_encoder(predictions)
        return value

    def create_prediction(self, task_id: int, entry: dict) -> int:
        """Store ``entry`` ({"result", "score", "model_version"}) as a prediction of the task; its id."""
        prediction = self._api.call(f"storing task {task_id}'s prediction", lambda: self._client.predictions.create(
            task=task_id, result=entry["result"], score=entry["score"], model_version=entry["model_version"]))
        return prediction.id

    def delete_prediction(self, prediction_id: int) -> None:
        self._api.call(f"deleting prediction {prediction_id}", lambda: self._client.predictions.delete(id=prediction_id))

