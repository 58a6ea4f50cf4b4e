"""`python -m backend worker` against a real redis-server that goes away: RQ's loop quits when
Redis is gone, ours waits for it and works on (a job never waits for a worker that silently left);
SIGTERM still ends it, also while it waits."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from support.processes import ServerProcess

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition, timeout_s: float, describe) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.2)


def registered_workers(url: str) -> list[str]:
    from redis import Redis
    from rq import Worker

    try:
        return [worker.name for worker in Worker.all(connection=Redis.from_url(url, socket_timeout=2))]
    except Exception:
        return []


def test_a_worker_that_loses_redis_mid_job_reconnects_and_works_on(redis_server, tmp_path):
    from redis import Redis

    from backend.jobs.queues import TRAINING_QUEUE, rq_queue

    env = {**os.environ, "REDIS_URL": redis_server.url, "MODEL_DIR": str(tmp_path), "SAM_CHECKPOINT": "",
           "DEVICE": "cpu", "LOG_LEVEL": "INFO"}
    worker = ServerProcess("worker", [sys.executable, "-m", "backend", "worker", "--name", "survivor"], env,
                           cwd=REPO_ROOT, log_path=tmp_path / "worker.log")

    def log() -> str:
        return (tmp_path / "worker.log").read_text(errors="replace")

    try:
        wait_until(lambda: "survivor" in registered_workers(redis_server.url), 60, worker.log_tail)
        # RQ's loop survives Redis going away while it waits for work, but not while a job runs
        rq_queue(TRAINING_QUEUE, Redis.from_url(redis_server.url)).enqueue("time.sleep", 60)
        wait_until(lambda: "time.sleep(60)" in log(), 60, worker.log_tail)
        redis_server.stop()
        wait_until(lambda: "lost its connection to Redis" in log(), 120, worker.log_tail)
        assert worker.exit_code() is None, "the worker must wait for Redis, not quit"
        redis_server.start_again()
        wait_until(lambda: "Redis answers again; working on" in log(), 120, worker.log_tail)
        wait_until(lambda: "survivor" in registered_workers(redis_server.url), 60, worker.log_tail)
        assert worker.exit_code() is None
        os.kill(worker.pid, signal.SIGTERM)
        wait_until(lambda: worker.exit_code() is not None, 30, worker.log_tail)
        assert worker.exit_code() == 0
    finally:
        worker.stop()
        if redis_server.process.exit_code() is not None:
            redis_server.start_again()
