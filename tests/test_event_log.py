"""The event log stays bounded whatever is sent to the open webhook (issue 20, finding 7: ten events
of many task ids grew it by 199 MiB, and a full disk then failed requests)."""

from __future__ import annotations

import errno
import json

from backend.event_log import IDS_RECORDED, JsonlEventLog
from backend.webhooks import WebhookEvent

PROJECT = {"id": 7, "token": "project-secret"}


def import_event(count: int) -> WebhookEvent:
    return WebhookEvent("TASKS_CREATED", {"project": PROJECT, "tasks": [{"id": i} for i in range(1, count + 1)]})


def test_a_huge_event_is_one_short_line_with_counts(tmp_path):
    log = JsonlEventLog(tmp_path / "events.jsonl")
    log.handle(import_event(100_000))
    log.handle(WebhookEvent("X" * 10_000, {"project": "9" * 10_000}))
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert all(len(line) < 400 for line in lines), [len(line) for line in lines]
    first, second = map(json.loads, lines)
    assert first["tasks"] == 100_000 and first["task_ids"] == list(range(1, IDS_RECORDED + 1))
    assert first["project"] == 7 and first["annotations"] == 0 and "project-secret" not in lines[0]
    assert len(second["action"]) == len(second["project"]) == 64


def test_the_log_is_rotated_into_one_older_file(tmp_path):
    log = JsonlEventLog(tmp_path / "events.jsonl", max_bytes=2_000)
    for _ in range(100):
        log.handle(import_event(3))
    sizes = [path.stat().st_size for path in (log.path, log.rotated)]
    assert all(0 < size <= 2_000 for size in sizes), sizes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.1", "events.jsonl.lock"]


def test_a_full_disk_loses_the_record_not_the_event(tmp_path, monkeypatch, caplog):
    import backend.event_log as event_log

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(event_log.os, "write", no_space)
    assert JsonlEventLog(tmp_path / "events.jsonl").handle(import_event(2)) == {}
    assert "TASKS_CREATED event not recorded" in caplog.text and "No space left" in caplog.text
