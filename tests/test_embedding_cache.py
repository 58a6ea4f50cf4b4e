"""EmbeddingCache: LRU, one computation per key under concurrency, Redis sharing and degradation."""

import logging
import shutil
import socket
import subprocess
import threading
import time

import pytest
import torch

from backend.segmenters.embedding_cache import EmbeddingCache


def test_concurrent_requests_for_one_key_compute_once():
    cache = EmbeddingCache(capacity=4)
    calls = []
    release = threading.Event()

    def compute():
        calls.append(1)
        release.wait(5)  # hold the computation until every thread is waiting on it
        return torch.full((2,), 7.0)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("img", compute))) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join(5)

    assert len(calls) == 1
    assert len(results) == 6 and all(r is results[0] for r in results)


def test_different_keys_compute_in_parallel():
    cache = EmbeddingCache(capacity=4)
    both_started = threading.Barrier(2, timeout=5)  # breaks (raises) if the computations were serialized

    def compute():
        both_started.wait()
        return 1

    errors = []

    def run(key):
        try:
            cache.get_or_compute(key, compute)
        except threading.BrokenBarrierError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(key,)) for key in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []


def test_waiters_get_the_owners_exception_and_the_key_can_be_retried():
    cache = EmbeddingCache(capacity=4)
    started, release = threading.Event(), threading.Event()

    def failing():
        started.set()
        release.wait(5)
        raise RuntimeError("encoder failed")

    outcomes = []

    def run():
        try:
            cache.get_or_compute("img", failing)
        except RuntimeError as exc:
            outcomes.append(str(exc))

    owner = threading.Thread(target=run)
    owner.start()
    started.wait(5)
    waiter = threading.Thread(target=run)
    waiter.start()
    time.sleep(0.1)
    release.set()
    owner.join(5)
    waiter.join(5)
    assert outcomes == ["encoder failed", "encoder failed"]
    assert cache.get_or_compute("img", lambda: "ok") == "ok"


def test_least_recently_used_entry_is_evicted():
    cache = EmbeddingCache(capacity=2)
    calls = []

    def value(key):
        return cache.get_or_compute(key, lambda: calls.append(key) or key)

    value("a"), value("b"), value("a"), value("c")  # c evicts b, the least recently used
    assert len(cache) == 2
    value("a")
    value("b")
    assert calls == ["a", "b", "c", "b"]


def test_unreachable_redis_degrades_to_local_with_a_warning(caplog):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = EmbeddingCache(capacity=2, redis_url=f"redis://127.0.0.1:{port}/0")
    calls = []
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_compute("img", lambda: calls.append(1) or 5) == 5
        assert cache.get_or_compute("img", lambda: calls.append(1) or 6) == 5
    assert calls == [1]
    assert "Redis" in caplog.text


@pytest.fixture
def redis_url(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server); Redis sharing not tested")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.skip("redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(5)


def test_replicas_share_values_through_redis(redis_url):
    import redis

    embedding = {"features": torch.arange(6.0).reshape(1, 2, 3), "input_size": (683, 1024)}
    replica_a = EmbeddingCache(capacity=2, redis_url=redis_url, ttl_s=60, key_prefix="test:")
    replica_b = EmbeddingCache(capacity=2, redis_url=redis_url, ttl_s=60, key_prefix="test:")

    replica_a.get_or_compute("sam-vit_b:abc", lambda: embedding)
    calls = []
    shared = replica_b.get_or_compute("sam-vit_b:abc", lambda: calls.append(1))

    assert calls == []  # replica b never computed
    assert torch.equal(shared["features"], embedding["features"]) and shared["input_size"] == (683, 1024)
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.ttl("test:sam-vit_b:abc") <= 60


def test_unreadable_redis_entry_is_recomputed(redis_url):
    import redis

    redis.Redis.from_url(redis_url).set("test:img", b"not a torch file")
    cache = EmbeddingCache(capacity=2, redis_url=redis_url, key_prefix="test:")
    assert cache.get_or_compute("img", lambda: torch.ones(1)).item() == 1.0
