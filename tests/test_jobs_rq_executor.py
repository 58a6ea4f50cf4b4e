"""The RQ executor's view of queued jobs on a real redis-server: a job whose submit is still under
way (written to disk, not yet in Redis) is not taken for lost, and a job its RQ task started after
the executor listed the jobs is not queued a second time."""

from __future__ import annotations

import time

from backend.jobs import executors
from backend.jobs.executors import RQExecutor
from backend.jobs.layout import JobLayout
from backend.jobs.store import FAILED, QUEUED, JobStore
from backend.jobs.types import PREANNOTATE, TRAIN


def test_a_queued_job_redis_does_not_know_is_failed_only_once_it_stays_unknown(redis_server, tmp_path, monkeypatch):
    jobs = JobStore(JobLayout(tmp_path))
    executor = RQExecutor(redis_server.url, jobs)
    executor.queues[TRAIN].empty()
    job = jobs.create("8", "test", TRAIN)  # another thread's submit is under way
    executor.poll()
    assert jobs.get(job.id).state == QUEUED
    monkeypatch.setattr(executors, "MISSING_FOR_S", 0.05)
    time.sleep(0.1)
    executor.submit(job)
    executor.poll()
    assert jobs.get(job.id).state == QUEUED and executor.queues[TRAIN].job_ids == [job.id]

    executor.queues[TRAIN].connection.delete(f"rq:job:{job.id}")  # Redis restarted without persistence
    executor.poll()
    assert jobs.get(job.id).state == QUEUED  # a fresh wait: the first miss was answered since
    time.sleep(0.1)
    executor.poll()
    assert jobs.get(job.id).state == FAILED and "gone from Redis" in jobs.get(job.id).error
    executor.queues[TRAIN].empty()


def test_a_job_its_rq_task_started_after_the_jobs_were_listed_is_not_queued_again(redis_server, tmp_path, monkeypatch):
    jobs = JobStore(JobLayout(tmp_path))
    executor = RQExecutor(redis_server.url, jobs)
    executor.queues[PREANNOTATE].empty()
    listed = jobs.create("8", "test", PREANNOTATE)
    executor.submit(listed)
    # after the executor listed it as queued, a worker planned it and its RQ task ended
    jobs.mark_running(listed.id, None)
    executor.connection.hset(f"rq:job:{listed.id}", "status", "finished")
    monkeypatch.setattr(jobs, "list", lambda project=None: [listed])
    executor.poll()
    assert executor.connection.hget(f"rq:job:{listed.id}", "status") == b"finished"
    executor.queues[PREANNOTATE].empty()
