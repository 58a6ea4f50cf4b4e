"""A job file of a type this backend does not know (written by a newer version, or damaged), or no job at all, never
stops the dispatcher: a queued one fails saying so, a running one is left alone with one warning,
and the other jobs run, embedded and on RQ."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from backend.jobs.executors import EmbeddedExecutor, RQExecutor
from backend.jobs.layout import JobLayout
from backend.jobs.store import FAILED, FINISHED, QUEUED, RUNNING, Job, JobNotFound, JobStore
from backend.jobs.types import PREANNOTATE, TRAIN
from backend.settings import Settings

DAMAGED_TYPES = ["from-a-newer-version", None, ["train"], 3]


def write_job(jobs: JobStore, name: str, job_type, state: str = QUEUED, **fields) -> Job:
    """A job file as another version (or a damaged disk) left it, older than any job made here."""
    job = Job(id=f"p7-{name}-20260101T000000-abcdef", project="7", trigger="another version", type=job_type,
              state=state, created_at=1.0, **fields)
    jobs.layout.jobs_dir.mkdir(parents=True, exist_ok=True)
    (jobs.layout.jobs_dir / f"{job.id}.json").write_text(json.dumps(job.to_json()))
    return job


def finish_at_once(settings, job_id: str) -> None:
    """The body of a job in the spawned process: it finishes."""
    JobStore(JobLayout(settings.model_dir)).finish(job_id, {"ran": True})


@pytest.mark.parametrize("job_type", DAMAGED_TYPES)
def test_the_embedded_executor_fails_a_queued_job_of_an_unknown_type_and_runs_the_others(tmp_path, job_type, caplog):
    settings = Settings(model_dir=tmp_path)
    jobs = JobStore(JobLayout(tmp_path))
    stranger = write_job(jobs, "stranger", job_type)
    known = jobs.create("8", "test")
    executor = EmbeddedExecutor(settings, jobs, finish_at_once)
    deadline = time.monotonic() + 60
    while jobs.get(known.id).state != FINISHED and time.monotonic() < deadline:
        executor.poll()
        time.sleep(0.1)
    assert jobs.get(known.id).state == FINISHED
    failed = jobs.get(stranger.id)
    assert failed.state == FAILED and "knows no job type" in failed.error and "newer version" in failed.error
    assert caplog.text.count(stranger.id) == 1  # one warning


@pytest.mark.parametrize("content", ['{"id": "p7-cut-off', '["a list"]', '{"state": "queued"}', "\x00\x01"])
def test_a_job_file_that_is_no_job_is_skipped_with_one_warning_and_the_others_run(tmp_path, content, caplog):
    settings = Settings(model_dir=tmp_path)
    jobs = JobStore(JobLayout(tmp_path))
    known = jobs.create("8", "test")
    damaged = jobs.layout.jobs_dir / "p7-damaged-20260101T000000-abcdef.json"
    damaged.write_text(content)
    executor = EmbeddedExecutor(settings, jobs, finish_at_once)
    deadline = time.monotonic() + 60
    while jobs.get(known.id).state != FINISHED and time.monotonic() < deadline:
        executor.poll()
        time.sleep(0.1)
    assert [job.id for job in jobs.list()] == [known.id] and jobs.get(known.id).state == FINISHED
    assert caplog.text.count(damaged.name) == 1  # listed at every poll, warned about once
    with pytest.raises(JobNotFound):
        jobs.get("p7-damaged-20260101T000000-abcdef")
    assert damaged.read_text() == content  # left as it was, for whoever looks at it


def test_a_running_job_of_an_unknown_type_is_left_alone_with_one_warning_and_a_dead_one_fails(tmp_path, caplog):
    jobs = JobStore(JobLayout(tmp_path))
    elsewhere = write_job(jobs, "elsewhere", "from-a-newer-version", state=RUNNING)  # its parts run in RQ workers
    executor = EmbeddedExecutor(Settings(model_dir=tmp_path), jobs, finish_at_once)
    for _ in range(3):
        executor.poll()
    assert jobs.get(elsewhere.id).state == RUNNING and caplog.text.count(elsewhere.id) == 1
    dead = write_job(jobs, "dead", "from-a-newer-version", state=RUNNING, pid=2 ** 22 + 12345,  # no such process
                     host=socket.gethostname())
    assert [job.id for job in jobs.reap_dead()] == [dead.id]
    assert jobs.get(dead.id).state == FAILED
    preannotating = jobs.create("9", "test", PREANNOTATE, pid=12345)
    write_job(jobs, "queued", "from-a-newer-version")
    assert jobs.first_queued(preannotating) is False  # a running job's check between its parts never breaks


def test_the_rq_executor_fails_a_queued_job_of_an_unknown_type_and_keeps_the_others(redis_server, tmp_path, caplog):
    jobs = JobStore(JobLayout(tmp_path))
    executor = RQExecutor(redis_server.url, jobs)
    for queue in executor.queues.values():
        queue.empty()
    stranger = write_job(jobs, "stranger", "from-a-newer-version")
    elsewhere = write_job(jobs, "elsewhere", ["damaged"], state=RUNNING)
    known = jobs.create("8", "test", TRAIN)
    executor.submit(known)
    with caplog.at_level(logging.WARNING):
        executor.poll()
        executor.poll()
    assert jobs.get(known.id).state == QUEUED and executor.queues[TRAIN].job_ids == [known.id]
    assert jobs.get(stranger.id).state == FAILED and "knows no job type" in jobs.get(stranger.id).error
    assert jobs.get(elsewhere.id).state == RUNNING and caplog.text.count(elsewhere.id) == 1
    executor.queues[TRAIN].empty()
