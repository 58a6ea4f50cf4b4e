"""Scale-out on a real redis-server: jobs travel through the RQ queue to `python -m backend worker`,
and the Redis lock admits one training job per project across workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.active_learning.jobs import FAILED
from backend.active_learning.layout import Layout
from backend.active_learning.queue import RQExecutor
from backend.active_learning.service import ActiveLearning
from backend.active_learning.training_lock import TrainingLock
from backend.settings import Settings

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_job_goes_through_rq_to_a_worker_that_reads_its_own_settings(redis_server, tmp_path):
    settings = Settings(model_dir=tmp_path / "model_dir", redis_url=redis_server.url)
    learning = ActiveLearning(settings)
    assert isinstance(learning.executor, RQExecutor)
    job_id = learning.handle("START_TRAINING", {"project": {"id": 3, "token": "project-secret"}})["job"]
    assert learning.executor.queue.job_ids == [job_id]
    assert b"project-secret" not in b"".join(learning.executor.queue.connection.dump(key) or b""
                                             for key in learning.executor.queue.connection.keys("*"))

    # The worker has no Label Studio credentials: the job must run there and fail saying so.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LABEL_STUDIO_")}
    env.update(REDIS_URL=redis_server.url, MODEL_DIR=str(settings.model_dir))
    worker = subprocess.run([sys.executable, "-m", "backend", "worker", "--burst"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr[-3000:]
    job = learning.jobs.get(job_id)
    assert job.state == FAILED and "set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in job.error
    assert job.pid not in (None, os.getpid())
    assert learning.executor.queue.job_ids == []


def test_a_job_redis_lost_before_it_started_is_failed_not_left_queued(redis_server, tmp_path):
    learning = ActiveLearning(Settings(model_dir=tmp_path / "model_dir", redis_url=redis_server.url))
    kept = learning.handle("START_TRAINING", {"project": {"id": 3}})["job"]
    lost = learning.handle("START_TRAINING", {"project": {"id": 4}})["job"]
    learning.executor.queue.connection.delete(f"rq:job:{lost}")  # e.g. Redis restarted without persistence
    learning.tick()
    assert learning.jobs.get(kept).state == "queued"
    job = learning.jobs.get(lost)
    assert job.state == FAILED and "gone from Redis" in job.error
    learning.executor.queue.empty()


def test_the_redis_lock_admits_one_job_per_project(redis_server, tmp_path):
    layout = Layout(tmp_path)
    events = []
    first = TrainingLock(layout, "3", redis_server.url).__enter__()

    def second_job():
        with TrainingLock(layout, "3", redis_server.url):
            events.append("second job runs")

    waiting = threading.Thread(target=second_job)
    waiting.start()
    with TrainingLock(layout, "4", redis_server.url):  # another project does not wait
        events.append("project 4 runs")
    time.sleep(1.0)
    first.refresh()
    events.append("first job ends")
    first.__exit__(None, None, None)
    waiting.join(10)
    assert events == ["project 4 runs", "first job ends", "second job runs"]
