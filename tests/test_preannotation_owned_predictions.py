"""The record of the predictions this backend stored, and which of a task's predictions a job may
delete: only its own, of another and not newer version, holding masks only."""

from __future__ import annotations

from backend.preannotation.owned_predictions import OwnedPredictions, superseded

V1 = "segassist-p7-v1+sam-vit_b"
V2 = "segassist-p7-v2+sam-vit_b"
DEFAULT = "segassist-base-v0+sam-vit_b"
BRUSH = {"type": "brushlabels", "from_name": "mask", "to_name": "image", "value": {"rle": [0], "brushlabels": ["Car"]}}
POLYGON = {"type": "polygonlabels", "from_name": "outline", "to_name": "image", "value": {"points": []}}
BOX = {"type": "rectanglelabels", "from_name": "gone_tool", "to_name": "image", "value": {}}


def prediction(pid, version, *regions):
    return {"id": pid, "model_version": version, "result": list(regions or [BRUSH])}


def test_stored_predictions_are_recorded_per_task_and_forgotten_once_deleted(tmp_path):
    record = OwnedPredictions(tmp_path)
    record.storing(1, V1, [])
    record.stored(1, 11, V1)
    record.storing(2, V1, [])
    record.stored(2, 21, V1)
    assert record.owned(1) == {11: V1} and record.owned(2) == {21: V1} and record.owned(3) == {}
    assert OwnedPredictions(tmp_path).owned(1) == {11: V1}  # on disk, for every process
    record.forget(1, [11])
    assert record.owned(1) == {} and not (tmp_path / "predictions" / "1.json").exists()


def test_a_store_interrupted_after_label_studio_created_it_is_adopted(tmp_path):
    record = OwnedPredictions(tmp_path)
    before = [prediction(40, "detector-v1", BOX), prediction(41, V1)]  # 41: stored by someone else, earlier
    record.storing(5, V1, before)
    # Killed here: Label Studio created prediction 57, the record never heard of it.
    now = before + [prediction(57, V1)]
    assert record.reconcile(5, now) == {57: V1}
    assert record.owned(5) == {57: V1} and "storing" not in (tmp_path / "predictions" / "5.json").read_text()


def test_a_store_interrupted_before_label_studio_created_anything_leaves_nothing(tmp_path):
    record = OwnedPredictions(tmp_path)
    record.storing(5, V1, [])
    assert record.reconcile(5, [prediction(3, "other-model")]) == {}
    assert not (tmp_path / "predictions" / "5.json").exists()


def test_ids_label_studio_no_longer_has_are_dropped(tmp_path):
    record = OwnedPredictions(tmp_path)
    record.stored(1, 11, V1)
    record.stored(1, 12, V2)
    assert record.reconcile(1, [prediction(12, V2)]) == {12: V2}
    assert record.owned(1) == {12: V2}


def test_only_the_backends_own_older_mask_predictions_are_superseded():
    task = [
        prediction(1, V1),  # ours, older: goes
        prediction(2, V1),  # same version, another backend instance's: stays
        prediction(3, DEFAULT, POLYGON),  # ours, the default weights (older than any p7-v<n>): goes
        prediction(4, V1, BRUSH, BOX),  # ours, but holds a rectangle of a tool no longer in the config: stays
        prediction(5, "segassist-p7-v1+nosam"),  # ours, same lineage position, SAM changed: goes
        prediction(6, V2),  # the current version: stays
    ]
    owned = {1: V1, 3: DEFAULT, 4: V1, 5: "segassist-p7-v1+nosam", 6: V2}
    assert [p["id"] for p in superseded(task, owned, V2, "7")] == [1, 3, 5]


def test_after_a_rollback_predictions_of_newer_versions_stay():
    task = [prediction(1, DEFAULT), prediction(2, V2), prediction(3, "segassist-p7-v3+sam-vit_b")]
    owned = {1: DEFAULT, 2: V2, 3: "segassist-p7-v3+sam-vit_b"}
    # PINNED_VERSIONS pins p7-v2: v3's predictions are newer and stay; the default's are older.
    assert [p["id"] for p in superseded(task, owned, V2, "7")] == [1]
    # Another project's lineage names mean nothing here: not newer.
    assert superseded([prediction(9, "segassist-p8-v9+sam-vit_b")], {9: "x"}, V1, "7")[0]["id"] == 9
