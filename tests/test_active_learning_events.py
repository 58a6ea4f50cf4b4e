"""Webhook events -> pending changes -> training decisions (debounce, thresholds, deletions)."""

from __future__ import annotations

import json
import logging

import pytest

from backend.active_learning import events
from backend.active_learning.events import (MAX_EVENT_ANNOTATIONS, EventEffect, EventError, Pending, PendingStore, decide,
                                            parse_event)
from backend.active_learning.layout import Layout

BRUSH = {"type": "brushlabels", "value": {"format": "rle", "rle": [0], "brushlabels": ["Cat"]}}
SECRET_PROJECT = {"id": 7, "token": "s3cr3t-token", "task_data_password": "hunter2"}


def created(annotation_id: int, *, cancelled: bool = False, result=None, action: str = "ANNOTATION_CREATED") -> tuple:
    annotation = {"id": annotation_id, "project": 7, "task": 1, "was_cancelled": cancelled,
                  "result": [BRUSH] if result is None else result}
    return action, {"annotation": annotation, "task": {"id": 1}, "project": SECRET_PROJECT}


def test_created_annotation_with_a_mask_is_added():
    effect = parse_event(*created(5))
    assert (effect.project, effect.added, effect.removed, effect.force) == ("7", {5}, set(), False)


@pytest.mark.parametrize("annotation", [
    {"cancelled": True},  # skipped task
    {"result": []},  # empty
    {"result": [{"type": "keypointlabels", "value": {}}]},  # prompts only, no mask
])
def test_unusable_annotation_counts_as_removed(annotation):
    effect = parse_event(*created(5, **annotation))
    assert effect.added == set() and effect.removed == {5}


def test_bulk_created_and_plural_deleted_and_start_training():
    bulk = parse_event("ANNOTATIONS_CREATED", {
        "annotation": [created(1)[1]["annotation"], created(2, cancelled=True)[1]["annotation"]],
        "task": [{"id": 1}], "project": SECRET_PROJECT})
    assert bulk.added == {1} and bulk.removed == {2}
    deleted = parse_event("ANNOTATIONS_DELETED", {"annotations": [{"id": 3}, {"id": 4}], "project": SECRET_PROJECT})
    assert deleted.removed == {3, 4} and deleted.project == "7"
    forced = parse_event("START_TRAINING", {"project": SECRET_PROJECT})
    assert forced.force and forced.project == "7"


@pytest.mark.parametrize("action", ["TASKS_CREATED", "PROJECT_UPDATED", "LABEL_LINK_CREATED", "SOMETHING_NEW"])
def test_other_events_concern_no_training(action):
    assert parse_event(action, {"project": SECRET_PROJECT}) is None


@pytest.mark.parametrize("action, payload, fragment", [
    ("ANNOTATION_CREATED", {"project": SECRET_PROJECT}, "'annotation'"),
    ("ANNOTATIONS_DELETED", {"annotations": [{"id": "x"}], "project": SECRET_PROJECT}, "integer 'id'"),
    ("START_TRAINING", {}, "project id"),
    ("START_TRAINING", {"project": {"id": "../etc"}}, "project"),
])
def test_malformed_training_events_are_rejected_without_echoing_secrets(action, payload, fragment):
    with pytest.raises(EventError) as error:
        parse_event(action, payload)
    assert fragment in str(error.value)
    assert "s3cr3t" not in str(error.value) and "hunter2" not in str(error.value)


def test_decide_threshold_debounce_and_force():
    burst = Pending(annotation_ids={1, 2, 3}, last_event_at=100.0)
    assert not decide(burst, now=200.0, min_new_annotations=4, debounce_s=5).train  # too few
    assert not decide(burst, now=104.0, min_new_annotations=3, debounce_s=5).train  # burst still going
    assert decide(burst, now=105.0, min_new_annotations=3, debounce_s=5).train  # quiet for 5 s
    forced = Pending(annotation_ids=set(), last_event_at=100.0, forced=True)
    assert decide(forced, now=100.0, min_new_annotations=3, debounce_s=5).train  # at once


def test_pending_store_honours_deletions_and_updates(tmp_path):
    store = PendingStore(Layout(tmp_path))
    for annotation_id in range(1, 11):
        store.record(parse_event(*created(annotation_id)), now=float(annotation_id))
    store.record(parse_event(*created(3, action="ANNOTATION_UPDATED")), now=11.0)  # counted once
    store.record(parse_event("ANNOTATIONS_DELETED", {"annotations": [{"id": 1}, {"id": 2}], "project": {"id": 7}}), now=12.0)
    pending = store.read("7")
    assert pending.annotation_ids == set(range(3, 11)) and pending.last_event_at == 12.0
    assert not decide(pending, now=100.0, min_new_annotations=10, debounce_s=0).train  # 8 < 10 after deletions


def test_take_creates_once_and_clears(tmp_path):
    store = PendingStore(Layout(tmp_path))
    for annotation_id in range(3):
        store.record(parse_event(*created(annotation_id)), now=10.0)
    started = []
    assert not store.take("7", 11.0, 3, 5.0, started.append).train  # debouncing
    assert store.take("7", 15.0, 3, 5.0, started.append).train
    assert len(started) == 1 and store.read("7").annotation_ids == set()
    assert not store.take("7", 30.0, 3, 5.0, started.append).train and len(started) == 1
    assert store.projects_with_changes() == []


def test_pending_state_never_contains_payload_secrets(tmp_path):
    store = PendingStore(Layout(tmp_path))
    store.record(parse_event(*created(1)), now=1.0)
    text = "".join(p.read_text() for p in tmp_path.rglob("*.json"))
    assert "s3cr3t" not in text and "hunter2" not in text


def test_one_event_lists_at_most_max_event_annotations_and_counts_the_rest():
    many = [created(n)[1]["annotation"] for n in range(MAX_EVENT_ANNOTATIONS + 7)]
    bulk = parse_event("ANNOTATIONS_CREATED", {"annotation": many, "project": SECRET_PROJECT})
    assert len(bulk.added) == MAX_EVENT_ANNOTATIONS and bulk.unlisted == 7 and bulk.dropped == 0
    gone = parse_event("ANNOTATIONS_DELETED", {"annotations": [{"id": n} for n in range(MAX_EVENT_ANNOTATIONS + 3)],
                                               "project": SECRET_PROJECT})
    assert len(gone.removed) == MAX_EVENT_ANNOTATIONS and gone.dropped == 3 and gone.unlisted == 0


def test_the_pending_set_is_capped_and_the_excess_counted_so_the_next_job_trains_on_all(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(events, "MAX_PENDING_ANNOTATIONS", 5)
    store = PendingStore(Layout(tmp_path))
    store.record(EventEffect("7", added=frozenset(range(4))), 1.0)
    pending = store.record(EventEffect("7", added=frozenset(range(10, 14)), unlisted=2), 2.0)
    assert pending.annotation_ids == {0, 1, 2, 3, 10} and pending.over_cap == 3 + 2 and pending.count == 10
    assert "5 pending annotations over the 5 listed" in caplog.text
    pending = store.record(EventEffect("7", removed=frozenset({0, 1, 2, 3, 10, 11})), 3.0)
    assert pending.annotation_ids == set() and pending.over_cap == 5  # counted ones cannot be taken back
    assert store.read("7") == pending and store.projects_with_changes() == ["7"]
    assert decide(store.read("7"), now=10.0, min_new_annotations=5, debounce_s=5).train
    assert json.loads(Layout(tmp_path).pending_file("7").read_text())["over_cap"] == 5
