"""Scale-out on a real redis-server: jobs travel through the RQ queue to `python -m backend worker`,
and the Redis run lock admits one training job (one run of a kind) per project across workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from active_learning_fakes import connect

from backend.jobs.store import FAILED
from backend.active_learning.layout import Layout
from backend.jobs import executors
from backend.jobs.executors import RQExecutor
from backend.components import Components
from backend.jobs.types import TRAIN
from backend.active_learning.training_job import training_lock
from backend.jobs.run_lock import ProjectRunLock, RunLockBusy
from backend.settings import Settings

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_job_goes_through_rq_to_a_worker_that_reads_its_own_settings(redis_server, tmp_path):
    settings = Settings(model_dir=tmp_path / "model_dir", redis_url=redis_server.url)
    learning = Components(settings)
    assert isinstance(learning.executor, RQExecutor)
    connect(settings, 3)
    job_id = learning.webhooks.handle("START_TRAINING", {"project": {"id": 3, "token": "project-secret"}})["job"]
    assert learning.executor.queues[TRAIN].job_ids == [job_id]
    assert b"project-secret" not in b"".join(learning.executor.queues[TRAIN].connection.dump(key) or b""
                                             for key in learning.executor.queues[TRAIN].connection.keys("*"))

    # The worker has no Label Studio credentials: the job must run there and fail saying so.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LABEL_STUDIO_")}
    env.update(REDIS_URL=redis_server.url, MODEL_DIR=str(settings.model_dir))
    worker = subprocess.run([sys.executable, "-m", "backend", "worker", "--burst"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-3000:]
    job = learning.jobs.get(job_id)
    assert job.state == FAILED and "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in job.error
    assert job.pid not in (None, os.getpid())
    assert learning.executor.queues[TRAIN].job_ids == []


def test_a_job_redis_lost_before_it_started_is_failed_not_left_queued(redis_server, tmp_path, monkeypatch):
    learning = Components(Settings(model_dir=tmp_path / "model_dir", redis_url=redis_server.url))
    connect(learning.settings, 3, 4)
    kept = learning.webhooks.handle("START_TRAINING", {"project": {"id": 3}})["job"]
    lost = learning.webhooks.handle("START_TRAINING", {"project": {"id": 4}})["job"]
    learning.executor.queues[TRAIN].connection.delete(f"rq:job:{lost}")  # e.g. Redis restarted without persistence
    learning.dispatcher.tick()
    assert learning.jobs.get(lost).state == "queued"  # for MISSING_FOR_S: its submit may be under way
    monkeypatch.setattr(executors, "MISSING_FOR_S", 0.05)
    time.sleep(0.1)
    learning.dispatcher.tick()
    assert learning.jobs.get(kept).state == "queued"
    job = learning.jobs.get(lost)
    assert job.state == FAILED and "gone from Redis" in job.error
    learning.executor.queues[TRAIN].empty()


def test_the_redis_lock_admits_one_job_per_project(redis_server, tmp_path):
    layout = Layout(tmp_path)
    events = []
    first = training_lock(layout, "3", "job-1", redis_server.url).__enter__()

    def second_job():
        with training_lock(layout, "3", "job-2", redis_server.url):
            events.append("second job runs")

    waiting = threading.Thread(target=second_job)
    waiting.start()
    with training_lock(layout, "4", "job-3", redis_server.url):  # another project does not wait
        events.append("project 4 runs")
    time.sleep(1.0)
    first.refresh()
    events.append("first job ends")
    first.__exit__(None, None, None)
    waiting.join(10)
    assert events == ["project 4 runs", "first job ends", "second job runs"]


def test_a_job_queued_pickled_by_an_earlier_version_is_queued_again_as_json(redis_server, tmp_path):
    import zlib

    from redis import Redis
    from rq import Queue

    learning = Components(Settings(model_dir=tmp_path / "model_dir", redis_url=redis_server.url))
    job = learning.jobs.create("3", "START_TRAINING")
    connection = Redis.from_url(redis_server.url)
    # what the version before the JSON switch queued: RQ's default (pickle) serializer, the old path
    Queue("segmentation-training", connection=connection).enqueue("backend.active_learning.queue.run_rq_job", job.id,
                                                                  job_id=job.id)
    learning.dispatcher.tick()
    data = json.loads(zlib.decompress(connection.hget(f"rq:job:{job.id}", "data")))
    assert data[0] == "backend.jobs.executors.run_rq_job" and data[2] == [job.id]
    assert learning.executor.queues[TRAIN].job_ids == [job.id] and learning.jobs.get(job.id).state == "queued"
    learning.executor.queues[TRAIN].empty()


def test_the_processes_of_one_run_share_the_redis_lock_and_another_run_waits(redis_server, tmp_path):
    def lock(holder, ttl_s=120.0):
        return ProjectRunLock(tmp_path, "3", "preannotation", holder, redis_server.url, ttl_s)

    chunk_a, chunk_b = lock("job-1"), lock("job-1")  # two RQ workers on chunks of one job
    chunk_a.acquire(blocking=False)
    chunk_b.acquire(blocking=False)
    with pytest.raises(RunLockBusy) as busy:
        lock("job-2").acquire(blocking=False)
    assert busy.value.holder == "job-1" and lock("anyone").current_holder() == "job-1"
    lock("job-2").release()  # releasing someone else's lock does nothing
    assert chunk_a.refresh() and lock("anyone").current_holder() == "job-1"
    chunk_b.release()  # whoever ends the run frees it, for every process of the run
    assert lock("anyone").current_holder() is None

    # A run whose processes died (nobody refreshes) frees the project after the ttl.
    lock("dead-job", ttl_s=0.3).acquire(blocking=False)
    started = time.monotonic()
    lock("job-2").acquire()
    assert 0.1 < time.monotonic() - started < 5 and lock("anyone").current_holder() == "job-2"
    assert lock("dead-job").refresh() is False  # a late process of the dead run cannot take it back
