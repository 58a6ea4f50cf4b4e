"""Label Studio webhook events -> per-project pending annotation changes -> "train now?" decisions.

The webhook handler only calls ``PendingStore.record`` (a few small file operations under a
per-project lock, no Label Studio calls), so it answers well within Label Studio's 1 s timeout.
The dispatcher (through ``retraining.Retraining.queue_due``) later asks ``decide`` whether the
pending changes justify a job.

Payloads are never logged: their ``project`` object carries ``token`` and ``task_data_password``.

Bounded whatever arrives: one event lists at most ``MAX_EVENT_ANNOTATIONS`` annotation ids and a
project's pending set at most ``MAX_PENDING_ANNOTATIONS``; annotations beyond are only counted
(``over_cap``). Nothing is lost by that: a training job reads all of the project's annotations from
Label Studio, the ids only decide when to train.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.files import file_lock, read_json, write_json_atomic
from backend.active_learning.layout import Layout
from backend.webhooks import EventError, WebhookEvent

logger = logging.getLogger(__name__)

START_TRAINING = "START_TRAINING"
# Region types that carry a mask the extreme-point model can learn from.
MASK_REGION_TYPES = frozenset({"brushlabels", "polygonlabels"})
# Annotation ids read from one event; the rest of a created batch counts as new, a deleted rest is dropped.
MAX_EVENT_ANNOTATIONS = 1_000
# Annotation ids kept pending per project; beyond, new ones are counted (far over any training threshold).
MAX_PENDING_ANNOTATIONS = 10_000


@dataclass(frozen=True)
class EventEffect:
    """What one event changes for training.

    added: ids of annotations that now hold usable masks (created or updated).
    removed: ids of annotations deleted, cancelled or emptied (they no longer count).
    force: train at once (the "Start training" button).
    unlisted: created annotations beyond ``MAX_EVENT_ANNOTATIONS``: not read, counted as new.
    dropped: deleted annotations beyond it: not read (they may stay counted; the job reads what exists).
    """

    project: str
    added: frozenset[int] = frozenset()
    removed: frozenset[int] = frozenset()
    force: bool = False
    unlisted: int = 0
    dropped: int = 0


def parse_event(action: str, payload: dict) -> EventEffect | None:
    """The training effect of a webhook, or None for actions that do not concern training.

    Raises EventError when a training action's payload is malformed.
    """
    event = WebhookEvent(action, payload)
    if action == START_TRAINING:
        return EventEffect(project=event.project(), force=True)
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
        annotations = payload.get("annotation")
        if isinstance(annotations, dict):
            annotations = [annotations]
        if not isinstance(annotations, list) or not annotations:
            raise EventError(f"{action} without an 'annotation' object")
        added, removed = set(), set()
        for annotation in annotations[:MAX_EVENT_ANNOTATIONS]:
            (added if _is_usable(annotation) else removed).add(_annotation_id(annotation, action))
        return EventEffect(project=event.project(annotations[0]), added=frozenset(added), removed=frozenset(removed),
                           unlisted=max(0, len(annotations) - MAX_EVENT_ANNOTATIONS))
    if action == "ANNOTATIONS_DELETED":
        annotations = payload.get("annotations")
        if not isinstance(annotations, list):
            raise EventError("ANNOTATIONS_DELETED without an 'annotations' list")
        removed = frozenset(_annotation_id(annotation, action) for annotation in annotations[:MAX_EVENT_ANNOTATIONS])
        return EventEffect(project=event.project(), removed=removed,
                           dropped=max(0, len(annotations) - MAX_EVENT_ANNOTATIONS))
    return None


def _annotation_id(annotation: object, action: str) -> int:
    annotation_id = annotation.get("id") if isinstance(annotation, dict) else None
    if isinstance(annotation_id, bool) or not isinstance(annotation_id, int):
        raise EventError(f"{action}: an annotation without an integer 'id'")
    return annotation_id


def _is_usable(annotation: object) -> bool:
    """An annotation object, not cancelled (skipped) and holding at least one mask region."""
    if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
        return False
    result = annotation.get("result")
    return isinstance(result, list) and any(
        isinstance(region, dict) and region.get("type") in MASK_REGION_TYPES for region in result
    )


@dataclass
class Pending:
    """Changes for one project since its last training job was created.

    annotation_ids: annotations created/updated with usable masks, minus those deleted since.
    last_event_at: time.time() of the latest event (the debounce counts from it).
    forced: START_TRAINING arrived.
    over_cap: new annotations counted but not listed (over ``MAX_EVENT_ANNOTATIONS`` in an event or
        ``MAX_PENDING_ANNOTATIONS`` in all); deletions cannot take them back: the next job trains on all.
    """

    annotation_ids: set[int] = field(default_factory=set)
    last_event_at: float | None = None
    forced: bool = False
    over_cap: int = 0

    @property
    def count(self) -> int:
        """New annotations: those listed and those only counted."""
        return len(self.annotation_ids) + self.over_cap

    def to_json(self) -> dict:
        value = {"annotation_ids": sorted(self.annotation_ids), "last_event_at": self.last_event_at,
                 "forced": self.forced}
        return value | {"over_cap": self.over_cap} if self.over_cap else value

    @classmethod
    def from_json(cls, value: dict | None) -> "Pending":
        value = value or {}
        return cls(set(value.get("annotation_ids", [])), value.get("last_event_at"), bool(value.get("forced")),
                   int(value.get("over_cap", 0)))


@dataclass(frozen=True)
class Decision:
    train: bool
    reason: str  # shown as the job's trigger, or why nothing starts yet


def decide(pending: Pending, now: float, min_new_annotations: int, debounce_s: float) -> Decision:
    """Whether ``pending`` changes start a training job at time ``now``.

    START_TRAINING trains at once. Otherwise at least ``min_new_annotations`` must have arrived and
    no event for ``debounce_s`` seconds, so that a burst of saves becomes one job.
    """
    count = pending.count
    if pending.forced:
        return Decision(True, f"START_TRAINING ({count} new annotations)")
    if count < min_new_annotations:
        return Decision(False, f"{count} of {min_new_annotations} new annotations")
    quiet_for = now - (pending.last_event_at or 0.0)
    if quiet_for < debounce_s:
        return Decision(False, f"{count} new annotations; waiting {debounce_s - quiet_for:.1f} s for the burst to end")
    return Decision(True, f"{count} new annotations")


class PendingStore:
    """Pending changes per project, on disk, safe across processes (one flock per project)."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def record(self, effect: EventEffect, now: float) -> Pending:
        with file_lock(self.layout.pending_lock(effect.project)):
            pending = self.read(effect.project)
            pending.annotation_ids |= effect.added
            pending.annotation_ids -= effect.removed
            pending.over_cap += effect.unlisted
            excess = len(pending.annotation_ids) - MAX_PENDING_ANNOTATIONS
            if excess > 0:  # keep the lowest ids, count the rest
                pending.annotation_ids = set(sorted(pending.annotation_ids)[:MAX_PENDING_ANNOTATIONS])
                pending.over_cap += excess
                logger.info("project %s: %d pending annotations over the %d listed, counted; the next job trains on all",
                            effect.project, pending.over_cap, MAX_PENDING_ANNOTATIONS)
            pending.forced = pending.forced or effect.force
            pending.last_event_at = now
            write_json_atomic(self.layout.pending_file(effect.project), pending.to_json())
            return pending

    def read(self, project: str) -> Pending:
        return Pending.from_json(read_json(self.layout.pending_file(project)))

    def clear(self, project: str) -> None:
        """Forget ``project``'s pending changes."""
        with file_lock(self.layout.pending_lock(project)):
            write_json_atomic(self.layout.pending_file(project), Pending().to_json())

    def take(self, project: str, now: float, min_new_annotations: int, debounce_s: float, on_train) -> Decision:
        """Decide for ``project``; when it is time to train, call ``on_train(decision)`` (which creates
        the job) and then clear the pending changes, all under the project's pending lock."""
        with file_lock(self.layout.pending_lock(project)):
            pending = self.read(project)
            decision = decide(pending, now, min_new_annotations, debounce_s)
            if decision.train:
                on_train(decision)
                write_json_atomic(self.layout.pending_file(project), Pending().to_json())
            return decision

    def projects_with_changes(self) -> list[str]:
        return [p for p in self.layout.projects() if self.layout.pending_file(p).exists() and self._has_changes(p)]

    def _has_changes(self, project: str) -> bool:
        pending = self.read(project)
        return pending.forced or pending.count > 0
