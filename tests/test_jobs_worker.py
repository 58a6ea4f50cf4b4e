"""`python -m backend worker`: without Redis it explains the embedded mode instead of waiting forever;
with Redis, a SIGTERM or SIGINT that comes while no RQ loop listens (startup, a reconnect) still ends
it, and RQ's signal handlers do not outlive the loop that installed them."""

from __future__ import annotations

import argparse
import signal

import pytest
from redis import Redis
from rq.job import JobStatus

from backend.cli import main
from backend.jobs import worker as worker_module
from backend.jobs.queues import SERIALIZER, TRAINING_QUEUE, rq_queue
from backend.jobs.worker import SHUTDOWN_SIGNALS, BackendWorker, Shutdown


def test_worker_without_redis_explains_the_embedded_worker(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err


@pytest.fixture
def training_queue(redis_server):
    connection = Redis.from_url(redis_server.url)
    connection.flushdb()
    return rq_queue(TRAINING_QUEUE, connection)


@pytest.fixture
def signal_handlers_kept():
    """The handlers pytest runs with, put back whatever the test installs."""
    before = {sig: signal.getsignal(sig) for sig in SHUTDOWN_SIGNALS}
    yield before
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_a_shutdown_heard_before_the_loop_ends_it_before_it_takes_a_job(training_queue, signal_handlers_kept):
    job = training_queue.enqueue("time.sleep", 0)
    shutdown = Shutdown()
    shutdown.request()
    worker = BackendWorker([training_queue], connection=training_queue.connection, serializer=SERIALIZER,
                           shutdown=shutdown)
    worker.work(max_idle_time=5)  # without the shutdown: it runs the job, then idles out
    assert job.get_status(refresh=True) == JobStatus.QUEUED


def test_rq_signal_handlers_end_with_the_worker_loop(training_queue, signal_handlers_kept):
    worker = BackendWorker([training_queue], connection=training_queue.connection, serializer=SERIALIZER)
    worker.work(burst=True)
    assert {sig: signal.getsignal(sig) for sig in signal_handlers_kept} == signal_handlers_kept


def test_a_sigterm_while_the_worker_starts_ends_the_command_without_a_job(training_queue, redis_server,
                                                                           signal_handlers_kept, monkeypatch):
    job = training_queue.enqueue("time.sleep", 0)
    bootstrap = BackendWorker.bootstrap

    def bootstrap_then_sigterm(self, *args, **kwargs):  # RQ's handlers are not yet in place
        bootstrap(self, *args, **kwargs)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(BackendWorker, "bootstrap", bootstrap_then_sigterm)
    monkeypatch.setattr(worker_module, "configure_logging", lambda: None)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    signal.signal(signal.SIGTERM, lambda *_: None)  # so that a SIGTERM the worker misses does not end pytest

    assert worker_module.run(argparse.Namespace(burst=True, name="starting")) == 0
    assert job.get_status(refresh=True) == JobStatus.QUEUED
