"""The embedding store in Redis (``REDIS_URL`` set): shared by replicas and workers on any machine,
bounded in bytes, least recently used first out.

Keys under ``prefix``: ``<prefix>e:<key>`` the bytes; ``<prefix>lru`` a sorted set of keys by last
use; ``<prefix>sizes`` a hash of each key's size; ``<prefix>bytes`` their total; ``<prefix>stats`` the
hit/miss counters; ``<prefix>lock:<key>`` the computation lock. Writing and evicting is one Lua
script, so concurrent writers keep the total right. The store evicts by itself and sets no
expiry, so it lives beside RQ's queues in one Redis without touching them (a standalone Redis;
the script reaches keys it derives, which Redis Cluster does not allow).

The computation lock expires (``LOCK_TTL_S``) unless its holder keeps extending it, so a replica
that dies mid-computation frees the image for another one within that time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import redis

from backend.embeddings.disk_store import COUNTERS
from backend.redis_connection import redis_client

LOCK_TTL_S = 60.0
_LOCK_POLL_S = 0.1

# KEYS: lru, sizes, bytes. ARGV: entry prefix, key, data, now, max bytes. Returns keys evicted.
_PUT = """
local old = redis.call('HGET', KEYS[2], ARGV[2])
if old then redis.call('DECRBY', KEYS[3], old) end
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], string.len(ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
local total = redis.call('INCRBY', KEYS[3], string.len(ARGV[3]))
local evicted = 0
while total > tonumber(ARGV[5]) do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #oldest == 0 then break end
  local size = tonumber(redis.call('HGET', KEYS[2], oldest[1]) or 0)
  redis.call('DEL', ARGV[1] .. oldest[1])
  redis.call('HDEL', KEYS[2], oldest[1])
  redis.call('ZREM', KEYS[1], oldest[1])
  total = redis.call('DECRBY', KEYS[3], size)
  evicted = evicted + 1
end
return evicted
"""

# KEYS: lru, sizes, bytes. ARGV: entry prefix, key. Deletes an entry (if there) and forgets it.
_DROP = """
redis.call('DEL', ARGV[1] .. ARGV[2])
local size = redis.call('HGET', KEYS[2], ARGV[2])
if size then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('DECRBY', KEYS[3], size)
end
redis.call('ZREM', KEYS[1], ARGV[2])
"""


class RedisEmbeddingStore:
    """Bytes per key in Redis; at most ``max_bytes`` in all. Raises ``redis.RedisError`` when Redis
    fails (the cache in front decides what to do)."""

    kind = "redis"

    def __init__(self, url: str, max_bytes: int, prefix: str = "segmentation-backend:embeddings:"):
        self.max_bytes = max_bytes
        self._client = redis_client(url)
        self._prefix = prefix
        self._lru, self._sizes, self._bytes = prefix + "lru", prefix + "sizes", prefix + "bytes"
        self._put = self._client.register_script(_PUT)
        self._drop = self._client.register_script(_DROP)

    def get(self, key: str) -> bytes | None:
        data = self._client.get(self._entry(key))
        if data is None:
            if self._client.zscore(self._lru, key) is not None:  # its bytes are gone (e.g. deleted by hand)
                self.delete(key)
            return None
        self._client.zadd(self._lru, {key: time.time()}, xx=True)
        return data

    def contains(self, key: str) -> bool:
        return bool(self._client.exists(self._entry(key)))

    def put(self, key: str, data: bytes) -> bool:
        self._put(keys=[self._lru, self._sizes, self._bytes],
                  args=[self._prefix + "e:", key, data, time.time(), self.max_bytes])
        return True

    def delete(self, key: str) -> None:
        self._drop(keys=[self._lru, self._sizes, self._bytes], args=[self._prefix + "e:", key])

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Held while this process computes ``key``; other replicas asking for it wait here."""
        lock = self._client.lock(self._prefix + "lock:" + key, timeout=LOCK_TTL_S, sleep=_LOCK_POLL_S)
        lock.acquire(blocking=True)
        done = threading.Event()

        def keep_extending() -> None:
            while not done.wait(LOCK_TTL_S / 3):
                with contextlib.suppress(redis.RedisError):
                    lock.reacquire()

        keeper = threading.Thread(target=keep_extending, name="embedding-lock", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()
            with contextlib.suppress(redis.RedisError, redis.exceptions.LockError):
                lock.release()  # a lock that expired meanwhile is someone else's now

    def count(self, counter: str) -> None:
        """Add one to ``counter`` (one of ``COUNTERS``), shared by every replica."""
        if counter not in COUNTERS:
            raise ValueError(f"unknown counter {counter!r}")
        self._client.hincrby(self._prefix + "stats", counter, 1)

    def stats(self) -> dict:
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self._bytes).zcard(self._lru).hmget(self._prefix + "stats", *COUNTERS)
        size, entries, counts = pipe.execute()
        return {"bytes": int(size or 0), "entries": int(entries), "max_bytes": self.max_bytes,
                **{name: int(count or 0) for name, count in zip(COUNTERS, counts)}}

    def _entry(self, key: str) -> str:
        return self._prefix + "e:" + key
