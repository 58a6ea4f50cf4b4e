"""Which predictions in Label Studio this backend stored, so that pre-annotation deletes only its own.

A pre-annotation job replaces the predictions it stored earlier on a task with one of the project's
current model version. Label Studio's predictions carry no owner, and a ``segassist-`` version
names a model, not a backend: another backend instance, an import, or someone's script may hold
predictions with such versions. So a job deletes a prediction only when every one of these holds:

1. this backend recorded storing it (its id is in the record below);
2. its model version is not the project's current one;
3. its version is not *newer* than the current one in the project's lineage (after a
   ``PINNED_VERSIONS`` rollback to ``p3-v1``, predictions of ``p3-v2`` stay);
4. it holds mask regions only (brush or polygon), whatever their ``from_name``: a prediction with a
   rectangle or keypoint in it is someone's input.

The record, per project: ``MODEL_DIR/active_learning/projects/<id>/predictions/<task id>.json``

    {"predictions": {"<prediction id>": "<model version>", ...},
     "storing": {"version": "<model version>", "after": <id>, "at": <unix time>}}   (only while storing)

Before a job creates a prediction it writes "storing" (durably, with the highest prediction id on
the task then); after Label Studio answered with the new id, it records the id and clears
"storing". A process killed between the two leaves "storing": the next job to read the task adopts
the predictions of that version with a higher id (Label Studio numbers predictions in creation
order: those the killed store created), so a crash cannot orphan a prediction.
Ids Label Studio no longer has (deleted by hand, or by this backend) are dropped from the record
when a job next reads the task.

Not in the record: predictions Label Studio stored itself from this backend's ``/predict`` answers
("Retrieve predictions", opening a task): Label Studio never tells the backend their ids, and their
version cannot tell them from another instance's. Jobs never delete them; a task pre-annotated by
a job after such a prediction of an older version holds both (delete old versions in the Data
Manager: Actions, Delete predictions). Likewise predictions stored by jobs before the record existed.

One process writes a task's record at a time: a project's pre-annotation runs hold its run lock
(``backend.jobs.run_lock``) and each task of a run is worked by one process.
"""

from __future__ import annotations

import time
from pathlib import Path

from backend.active_learning.events import MASK_REGION_TYPES
from backend.active_learning.versions import lineage_position
from backend.files import read_json, write_json_atomic
from backend.model import extreme_version_of


class OwnedPredictions:
    """The record of one project's predictions stored by this backend (``project_dir``: the
    project's state directory under MODEL_DIR)."""

    def __init__(self, project_dir: Path):
        self.directory = Path(project_dir) / "predictions"

    def owned(self, task_id: int) -> dict[int, str]:
        """prediction id -> model version, for the task's predictions this backend stored."""
        return {int(key): version for key, version in self._read(task_id)["predictions"].items()}

    def storing(self, task_id: int, version: str, predictions: list[dict]) -> None:
        """About to create a prediction of ``version`` on the task, which holds ``predictions`` now
        (written before the request)."""
        record = self._read(task_id)
        after = max((p["id"] for p in predictions if isinstance(p.get("id"), int)), default=0)
        record["storing"] = {"version": version, "after": after, "at": time.time()}
        self._write(task_id, record)

    def stored(self, task_id: int, prediction_id: int, version: str) -> None:
        """Label Studio stored it as ``prediction_id``."""
        record = self._read(task_id)
        record["predictions"][str(int(prediction_id))] = version
        record.pop("storing", None)
        self._write(task_id, record)

    def forget(self, task_id: int, prediction_ids) -> None:
        """These predictions are gone from Label Studio (deleted)."""
        record = self._read(task_id)
        for prediction_id in prediction_ids:
            record["predictions"].pop(str(int(prediction_id)), None)
        self._write(task_id, record)

    def reconcile(self, task_id: int, predictions: list[dict]) -> dict[int, str]:
        """Bring the task's record in line with ``predictions``, the task's predictions as Label
        Studio listed them: an interrupted store's predictions are adopted, ids no longer there are
        dropped. Returns ``owned(task_id)`` afterwards."""
        record = self._read(task_id)
        present = {p["id"]: p.get("model_version") for p in predictions if isinstance(p.get("id"), int)}
        known = {int(key): version for key, version in record["predictions"].items() if int(key) in present}
        storing = record.pop("storing", None)
        if storing is not None:
            known.update({pid: version for pid, version in present.items()
                          if version == storing["version"] and pid > storing.get("after", 0)})
        changed = storing is not None or len(known) != len(record["predictions"])
        if changed:
            record["predictions"] = {str(pid): version for pid, version in known.items()}
            self._write(task_id, record)
        return known

    def _read(self, task_id: int) -> dict:
        record = read_json(self._path(task_id), None) or {}
        return {"predictions": dict(record.get("predictions") or {}),
                **({"storing": record["storing"]} if record.get("storing") else {})}

    def _write(self, task_id: int, record: dict) -> None:
        if record["predictions"] or record.get("storing"):
            write_json_atomic(self._path(task_id), record)
        else:
            self._path(task_id).unlink(missing_ok=True)

    def _path(self, task_id: int) -> Path:
        return self.directory / f"{int(task_id)}.json"


def superseded(predictions: list[dict], owned: dict[int, str], version: str, project: str) -> list[dict]:
    """Of a task's ``predictions``, those a job storing ``version`` for ``project`` deletes: see the
    module docstring (``owned``: from ``OwnedPredictions.owned``)."""
    current = lineage_position(project, extreme_version_of(version))
    return [
        p for p in predictions
        if p.get("id") in owned
        and p.get("model_version") != version
        and lineage_position(project, extreme_version_of(str(p.get("model_version") or ""))) <= current
        and masks_only(p)
    ]


def masks_only(prediction: dict) -> bool:
    """Whether every region of the prediction is a brush or polygon mask."""
    result = prediction.get("result")
    return isinstance(result, list) and all(
        isinstance(region, dict) and region.get("type") in MASK_REGION_TYPES for region in result)
