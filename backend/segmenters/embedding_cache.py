"""Cache of image embeddings: computed once per key, kept in an in-process LRU, optionally shared
between backend replicas through Redis.

Computing a SAM image embedding takes seconds on CPU while a click takes milliseconds, so the
first request for an image computes it and every concurrent request for the same image waits for
that one computation instead of starting its own.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import redis
import torch

logger = logging.getLogger(__name__)

# After a Redis failure, skip Redis for this long instead of paying a timeout on every request.
_REDIS_RETRY_AFTER_S = 30.0


class EmbeddingCache:
    """``get_or_compute(key, compute)``: the cached value for ``key``, computing it at most once.

    With ``redis_url``, values are also written to Redis (``torch.save`` bytes under
    ``key_prefix + key``, expiring after ``ttl_s``) and read from there before computing. Values
    must therefore be loadable with ``torch.load(weights_only=True)``: tensors, numbers, strings,
    and dicts/lists/tuples of them. Values read from Redis are on the CPU. If Redis fails, the cache
    logs a warning and works locally.

    Thread-safe.
    """

    def __init__(
        self,
        capacity: int,
        redis_url: str | None = None,
        ttl_s: int = 3600,
        key_prefix: str = "segmentation-backend:embedding:",
    ):
        self.capacity = capacity
        self._values: OrderedDict[str, Any] = OrderedDict()
        self._pending: dict[str, Future] = {}  # keys being computed -> their result, for waiters
        self._lock = threading.Lock()  # guards _values and _pending
        self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5) if redis_url else None
        self._ttl_s = ttl_s
        self._key_prefix = key_prefix
        self._redis_skip_until = 0.0  # time.monotonic()

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        """The value for ``key``: from memory, else from Redis, else ``compute()`` (stored in both).

        Concurrent calls for the same missing key wait for the first caller's computation and get
        its value, or its exception.
        """
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = Future()
                is_owner = True
            else:
                is_owner = False
        if not is_owner:
            return pending.result()
        try:
            value = self._redis_get(key)
            if value is None:
                value = compute()
                self._redis_put(key, value)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            if self.capacity > 0:
                self._values[key] = value
                while len(self._values) > self.capacity:
                    self._values.popitem(last=False)
        pending.set_result(value)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def _redis_get(self, key: str) -> Any | None:
        data = self._redis_call("read", lambda client: client.get(self._key_prefix + key))
        if data is None:
            return None
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # a foreign or truncated entry: recompute and overwrite it
            logger.warning("ignoring unreadable embedding-cache entry in Redis (%s)", type(exc).__name__)
            return None

    def _redis_put(self, key: str, value: Any) -> None:
        if self._redis is None:
            return
        buffer = io.BytesIO()
        torch.save(value, buffer)
        self._redis_call("write", lambda client: client.set(self._key_prefix + key, buffer.getvalue(), ex=self._ttl_s))

    def _redis_call(self, action: str, call: Callable[[redis.Redis], Any]) -> Any | None:
        """``call(client)``, or None when Redis is off, failing, or recently failed."""
        if self._redis is None or time.monotonic() < self._redis_skip_until:
            return None
        try:
            return call(self._redis)
        except redis.RedisError as exc:
            self._redis_skip_until = time.monotonic() + _REDIS_RETRY_AFTER_S
            logger.warning(
                "embedding cache: Redis %s failed (%s); using the in-process cache only for the next %.0f s",
                action,
                type(exc).__name__,
                _REDIS_RETRY_AFTER_S,
            )
            return None
