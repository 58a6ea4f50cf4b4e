"""EmbeddingCache and its shared stores: one computation per key (threads, processes, replicas),
LRU bounds in entries and bytes, restarts, Redis (a real redis-server), failures, preemption."""

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from backend.embeddings import codec
from backend.embeddings.disk_store import DiskEmbeddingStore
from backend.embeddings.preemption import Preempted, background
from backend.embeddings.redis_store import RedisEmbeddingStore
from backend.embeddings.cache import EmbeddingCache
from backend.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


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


def test_least_recently_used_entry_is_evicted_from_memory():
    cache = EmbeddingCache(capacity=2)
    calls = []

    def value(key):
        return cache.get_or_compute(key, lambda: calls.append(key) or key)

    value("a"), value("b"), value("a"), value("c")  # c evicts b, the least recently used
    assert cache.stats()["in_process_entries"] == 2
    value("a")
    value("b")
    assert calls == ["a", "b", "c", "b"]


# --- the disk store ------------------------------------------------------------------------------


def blob(mib: float, fill: int = 1) -> bytes:
    return bytes([fill]) * int(mib * MIB)


def test_disk_store_is_bounded_in_bytes_and_evicts_the_least_recently_used(tmp_path):
    store = DiskEmbeddingStore(tmp_path, max_bytes=3 * MIB)
    for index, key in enumerate("abc"):
        store.put(key, blob(1, index))
        time.sleep(0.01)  # distinct modification times
    assert store.get("a") == blob(1, 0)  # "a" is now the most recently used
    time.sleep(0.01)
    store.put("d", blob(1.5))
    assert not store.contains("b") and not store.contains("c")  # the two least recently used made room
    assert store.contains("a") and store.contains("d")
    stats = store.stats()
    assert stats["entries"] == 2 and stats["bytes"] == 2.5 * MIB <= stats["max_bytes"]


def test_temporary_files_left_by_a_killed_writer_are_removed(tmp_path):
    store = DiskEmbeddingStore(tmp_path, max_bytes=MIB)
    left = tmp_path / "entries" / ".abc.tmp"
    left.write_bytes(b"half an embedding")
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / "entries" / ".def.tmp"  # another process is writing it right now
    fresh.write_bytes(b"being written")
    store.put("a", blob(0.1))
    assert not left.exists() and fresh.exists()


def test_a_restarted_backend_reads_the_stored_embedding_instead_of_computing(tmp_path):
    settings = Settings(model_dir=tmp_path, embedding_store_bytes=64 * MIB)
    value = {"image_embed": torch.randn(1, 8, 4, 4), "high_res_feats": [torch.randn(1, 2, 8, 8)], "size": (5, 7)}
    first = EmbeddingCache.from_settings(settings, namespace="ckpt1")
    first.get_or_compute("sam-vit_b:abc", lambda: value)

    restarted = EmbeddingCache.from_settings(settings, namespace="ckpt1")
    calls = []
    again = restarted.get_or_compute("sam-vit_b:abc", lambda: calls.append(1))
    assert calls == []
    assert torch.allclose(again["image_embed"], value["image_embed"], atol=1e-2) and again["size"] == (5, 7)
    assert restarted.contains("sam-vit_b:abc") and not restarted.contains("sam-vit_b:other")
    # Another checkpoint of the same architecture does not get this checkpoint's embeddings.
    assert not EmbeddingCache.from_settings(settings, namespace="ckpt2").contains("sam-vit_b:abc")


def test_hit_rate_counts_requests_across_cache_instances_not_background_work(tmp_path):
    settings = Settings(model_dir=tmp_path)
    worker_a, worker_b = EmbeddingCache.from_settings(settings), EmbeddingCache.from_settings(settings)
    worker_a.get_or_compute("k", lambda: torch.ones(2), background=True)  # embedded ahead: not counted
    worker_a.get_or_compute("k", lambda: torch.zeros(2))  # a request: hit (memory)
    worker_b.get_or_compute("k", lambda: torch.zeros(2))  # another worker: hit (store)
    worker_b.get_or_compute("other", lambda: torch.zeros(2))  # computed: miss
    stats = worker_a.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (2, 1, 0.6667)
    assert stats["store"] == "disk" and stats["entries"] == 2


def test_an_unreadable_store_entry_is_computed_again(tmp_path):
    store = DiskEmbeddingStore(tmp_path, max_bytes=MIB)
    cache = EmbeddingCache(capacity=2, store=store)
    store.put("img", b"not a torch file")
    assert cache.get_or_compute("img", lambda: torch.ones(1)).item() == 1.0
    assert codec.decode(store.get("img"), "img").item() == 1.0


COMPUTE_IN_A_PROCESS = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    from backend.embeddings.cache import EmbeddingCache
    from backend.settings import Settings

    settings = Settings(model_dir=Path(sys.argv[1]), redis_url=sys.argv[2])
    cache = EmbeddingCache.from_settings(settings, namespace="ckpt")
    while time.time() < float(sys.argv[4]):  # start together
        time.sleep(0.005)

    def compute():
        with open(sys.argv[3], "a") as log:
            log.write(f"{os.getpid() % 2048}\\n")  # integers up to 2048 survive float16
        time.sleep(1.5)
        return torch.full((4,), float(os.getpid() % 2048))

    value = cache.get_or_compute("sam-vit_b:img", compute)
    print(int(value[0].item()), "computed" if cache.computed_last() else "read")
""")


def compute_in_two_processes(tmp_path, redis_url=""):
    log = tmp_path / "computed.log"
    start_at = str(time.time() + 1.5)
    argv = [sys.executable, "-c", COMPUTE_IN_A_PROCESS, str(tmp_path / "model_dir"), redis_url, str(log), start_at]
    processes = [subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), [err[-2000:] for _, err in outputs]
    return log.read_text().split(), [out.strip() for out, _ in outputs]


@pytest.mark.slow
def test_two_processes_asking_at_once_compute_once_on_disk(tmp_path):
    computed, answers = compute_in_two_processes(tmp_path)
    assert len(computed) == 1
    assert answers[0].split()[0] == answers[1].split()[0] == computed[0]  # the other waited and read it
    assert sorted(answer.split()[1] for answer in answers) == ["computed", "read"]


# --- the Redis store -----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_asking_at_once_compute_once_in_redis(tmp_path, redis_server):  # noqa: F811
    computed, answers = compute_in_two_processes(tmp_path, redis_server.url)
    assert len(computed) == 1
    assert answers[0].split()[0] == answers[1].split()[0] == computed[0]
    assert sorted(answer.split()[1] for answer in answers) == ["computed", "read"]
    assert not (tmp_path / "model_dir" / "embeddings").exists()  # nothing on disk with Redis


def test_redis_store_is_bounded_in_bytes_and_evicts_the_least_recently_used(redis_server):  # noqa: F811
    store = RedisEmbeddingStore(redis_server.url, max_bytes=3 * MIB, prefix="test-lru:")
    for index, key in enumerate("abc"):
        store.put(key, blob(1, index))
        time.sleep(0.01)
    assert store.get("a") == blob(1, 0)
    store.put("d", blob(1.5))
    assert [store.contains(key) for key in "abcd"] == [True, False, False, True]
    store.put("d", blob(0.5))  # a rewrite replaces the size, not adds to it
    stats = store.stats()
    assert stats["entries"] == 2 and stats["bytes"] == 1.5 * MIB


def test_replicas_share_values_through_redis_and_a_restart_keeps_them(redis_server):  # noqa: F811
    settings = Settings(redis_url=redis_server.url)
    embedding = {"features": torch.arange(6.0).reshape(1, 2, 3), "input_size": (683, 1024)}
    EmbeddingCache.from_settings(settings, namespace="share").get_or_compute("sam-vit_b:abc", lambda: embedding)
    calls = []
    shared = EmbeddingCache.from_settings(settings, namespace="share").get_or_compute("sam-vit_b:abc",
                                                                                       lambda: calls.append(1))
    assert calls == []
    assert torch.equal(shared["features"], embedding["features"]) and shared["input_size"] == (683, 1024)


def test_a_replica_that_died_holding_the_lock_frees_the_image_after_the_expiry(redis_server, monkeypatch):  # noqa: F811
    import backend.embeddings.redis_store as redis_store

    monkeypatch.setattr(redis_store, "LOCK_TTL_S", 1.0)
    store = RedisEmbeddingStore(redis_server.url, max_bytes=MIB, prefix="test-dead:")
    store._client.lock("test-dead:lock:img", timeout=1.0).acquire()  # its holder never comes back
    started = time.monotonic()
    with store.lock("img"):
        waited = time.monotonic() - started
    assert 0.5 < waited < 5


def test_unreachable_redis_degrades_to_in_process_with_a_warning(caplog):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cache = EmbeddingCache.from_settings(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    calls = []
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_compute("img", lambda: calls.append(1) or 5) == 5
        assert cache.get_or_compute("img", lambda: calls.append(1) or 6) == 5
    assert calls == [1]
    assert "Redis" in caplog.text or "redis" in caplog.text
    assert cache.stats()["store"] == "redis" and "error" in cache.stats()


# --- background computations give way --------------------------------------------------------------


def test_a_request_preempts_a_background_computation_which_is_retried():
    cache = EmbeddingCache(capacity=4)
    layers = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(50)])
    in_background = threading.Event()
    outcome = []

    def slow_background():
        def compute():
            in_background.set()
            with torch.no_grad():
                for _ in range(400):
                    layers(torch.ones(1, 4))
                    time.sleep(0.005)
            return "background value"

        with background():
            try:
                cache.get_or_compute("imported", compute, background=True)
                outcome.append("finished")
            except Preempted:
                outcome.append("preempted")

    thread = threading.Thread(target=slow_background)
    thread.start()
    in_background.wait(5)
    def request_compute():  # a request computes another image's embedding meanwhile
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.01)
        return "opened value"

    deadline = time.monotonic() + 5
    assert cache.get_or_compute("opened", request_compute) == "opened value"
    thread.join(10)
    assert outcome == ["preempted"]
    assert not cache.contains("imported")  # nothing half-made was kept; the scheduler queues it again
    assert cache.get_or_compute("imported", lambda: "retried") == "retried"


def test_a_request_waiting_on_a_preempted_background_computation_computes_it_itself():
    cache = EmbeddingCache(capacity=4)
    started, release = threading.Event(), threading.Event()

    def preempted():
        started.set()
        release.wait(5)
        raise Preempted("a request needs the encoder")

    def run_background():
        with pytest.raises(Preempted):
            cache.get_or_compute("img", preempted, background=True)

    thread = threading.Thread(target=run_background)
    thread.start()
    started.wait(5)
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(cache.get_or_compute("img", lambda: "by the request")))
    waiter.start()
    time.sleep(0.1)
    release.set()
    thread.join(5)
    waiter.join(5)
    assert answers == ["by the request"]


def test_lock_files_do_not_pile_up(tmp_path):
    store = DiskEmbeddingStore(tmp_path, max_bytes=MIB)
    cache = EmbeddingCache(capacity=0, store=store)
    for key in "abc":
        cache.get_or_compute(key, lambda: torch.ones(1))
    assert list((tmp_path / "locks").iterdir()) == []


# --- entries are checked before use (issue 20, finding 9) --------------------------------------------


def stored_cache(store, shapes=(1, 4, 8, 8)):
    """A cache on ``store`` whose "img" entry holds ones (computed once, then read back from the store)."""
    cache = EmbeddingCache(capacity=0, store=store, namespace="ckpt")
    cache.get_or_compute("img", lambda: torch.ones(shapes), shapes=shapes)
    return cache


@pytest.fixture(params=["disk", "redis"])
def any_store(request, tmp_path):
    if request.param == "disk":
        return DiskEmbeddingStore(tmp_path, max_bytes=64 * MIB)
    server = request.getfixturevalue("redis_server")
    return RedisEmbeddingStore(server.url, max_bytes=64 * MIB, prefix=f"test-check-{time.monotonic_ns()}:")


def test_a_flipped_byte_inside_an_entry_is_dropped_and_recomputed(any_store, caplog):
    cache = stored_cache(any_store)
    entry = bytearray(any_store.get("ckpt/img"))
    entry[len(entry) - 100] ^= 0x01  # inside the tensor data: still a loadable torch file
    any_store.put("ckpt/img", bytes(entry))
    with caplog.at_level(logging.WARNING):
        value = cache.get_or_compute("img", lambda: torch.full((1, 4, 8, 8), 2.0), shapes=(1, 4, 8, 8))
    assert torch.equal(value, torch.full((1, 4, 8, 8), 2.0))  # recomputed, not the damaged ones
    assert caplog.text.count("checksum mismatch") == 1
    assert codec.decode(any_store.get("ckpt/img"), "ckpt/img").eq(2.0).all()  # replaced in the store
    assert cache.stats()["bad_entries"] == 1


def test_another_images_entry_copied_over_is_not_served_as_this_image(any_store):
    cache = stored_cache(any_store)
    cache.get_or_compute("other", lambda: torch.full((1, 4, 8, 8), 7.0), shapes=(1, 4, 8, 8))
    any_store.put("ckpt/img", any_store.get("ckpt/other"))
    value = cache.get_or_compute("img", lambda: torch.full((1, 4, 8, 8), 3.0), shapes=(1, 4, 8, 8))
    assert value.eq(3.0).all()
    assert cache.stats()["bad_entries"] == 1


def test_an_entry_of_shapes_the_model_does_not_take_is_recomputed(any_store):
    cache = stored_cache(any_store, shapes=(1, 4, 16, 16))  # e.g. written by another architecture
    value = cache.get_or_compute("img", lambda: torch.zeros(1, 4, 8, 8), shapes=(1, 4, 8, 8))
    assert value.shape == (1, 4, 8, 8)
    assert cache.stats()["bad_entries"] == 1
    assert cache.get_or_compute("img", lambda: pytest.fail("stored now"), shapes=(1, 4, 8, 8)).shape == (1, 4, 8, 8)


def test_an_entry_of_the_previous_format_is_a_miss(any_store):
    import io

    buffer = io.BytesIO()
    torch.save({"format": 1, "value": torch.ones(1, 4, 8, 8)}, buffer)  # what the previous backend stored
    any_store.put("ckpt/img", buffer.getvalue())
    cache = EmbeddingCache(capacity=0, store=any_store, namespace="ckpt")
    assert cache.get_or_compute("img", lambda: torch.zeros(1, 4, 8, 8), shapes=(1, 4, 8, 8)).eq(0).all()
    stats = cache.stats()
    assert (stats["misses"], stats["bad_entries"]) == (1, 1)


def test_a_request_waiting_for_anothers_computation_is_a_wait_not_a_miss(tmp_path):
    cache = EmbeddingCache(capacity=4, store=DiskEmbeddingStore(tmp_path, max_bytes=MIB))
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return torch.ones(2)

    owner = threading.Thread(target=cache.get_or_compute, args=("img", slow))
    owner.start()
    started.wait(5)
    waiter = threading.Thread(target=cache.get_or_compute, args=("img", lambda: pytest.fail("computed twice")))
    waiter.start()
    time.sleep(0.2)
    release.set()
    owner.join(5)
    waiter.join(5)
    cache.get_or_compute("img", lambda: pytest.fail("in memory"))
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["waits"]) == (1, 1, 1)
    assert stats["hit_rate"] == round(1 / 3, 4)


# --- the disk stays usable (issue 20, finding 7) ------------------------------------------------------


def test_a_full_disk_serves_the_embedding_without_storing_it(tmp_path, monkeypatch, caplog):
    import errno

    import backend.embeddings.disk_store as disk_store

    store = DiskEmbeddingStore(tmp_path, max_bytes=64 * MIB)
    cache = EmbeddingCache(capacity=0, store=store)
    cache.get_or_compute("kept", lambda: torch.ones(2))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk_store, "write_atomic", disk_full)
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_compute("new", lambda: torch.full((2,), 5.0)).eq(5.0).all()
    assert not store.contains("new") and cache.stats()["writes_skipped"] == 1
    assert "full" in caplog.text
    # The store still serves what it has (a full disk is not a failed store).
    assert cache.get_or_compute("kept", lambda: pytest.fail("stored")).eq(1.0).all()


def test_the_disk_store_leaves_the_free_space_floor_evicting_its_own_entries_first(tmp_path, monkeypatch):
    import shutil

    import backend.embeddings.disk_store as disk_store

    free = {"bytes": 10 * MIB}
    monkeypatch.setattr(disk_store.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(100 * MIB, 90 * MIB, free["bytes"]))
    store = DiskEmbeddingStore(tmp_path, max_bytes=64 * MIB, min_free_bytes=8 * MIB)
    assert store.put("a", blob(1)) is True
    time.sleep(0.01)
    assert store.put("b", blob(1)) is True
    free["bytes"] = 8.5 * MIB  # something else filled the disk
    assert store.put("c", blob(1)) is True  # room made by evicting the least recently used ("a")
    assert not store.contains("a") and store.contains("b") and store.contains("c")
    free["bytes"] = 5 * MIB
    assert store.put("d", blob(1)) is False  # even an empty store would leave less than the floor
    assert store.contains("b") and store.contains("c")  # so nothing was evicted for it
    stats = store.stats()
    assert stats["min_free_bytes"] == 8 * MIB and stats["writing"].startswith("no")
