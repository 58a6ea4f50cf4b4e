"""SAM image embeddings, computed once per image per cluster and kept in a persistent shared store.

Computing an embedding takes seconds on CPU while a click takes milliseconds, so:

- an in-process LRU (``capacity`` entries) serves the clicks on the images in use;
- behind it the shared store (``backend.embeddings``: files under ``MODEL_DIR/embeddings`` by
  default, Redis with ``REDIS_URL``), bounded in bytes, survives restarts and serves every worker,
  replica and RQ worker;
- a computation happens once: threads of a process asking for the same key wait for the first
  one's computation, and across processes the store's per-key lock makes the others wait and then
  read the result.

Values are what the encoder returns: a tensor, or dicts/lists/tuples of tensors. Values that went
through the store (every value, when there is a store) come back on the CPU, float32 tensors
rounded through float16 when ``half`` (see ``backend.embeddings.codec``), so every process sees
the very same numbers. Keys are the segmenter's (``<model name>:<image content key>``), put under
``namespace``, which tells apart checkpoints of the same architecture.

Entries are checked before use (``backend.embeddings.codec``): an entry changed after writing,
another key's entry, an older backend's entry or, given ``shapes``, one of shapes the model does not
take is dropped, logged and counted (``bad_entries``) and the embedding computed again. An entry the
store does not keep (a full disk) is counted (``writes_skipped``); the request gets its embedding.

Requests are counted once each (every process's, with a store): ``hits`` found the embedding ready,
``misses`` computed it, ``waits`` waited for a computation another request or process was doing.

If the store fails (Redis unreachable, an unreadable disk), the cache logs a warning and works
in-process only for a while instead of failing requests. Thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import redis

from backend.embeddings import codec
from backend.embeddings.preemption import Preempted, foreground_waiting

logger = logging.getLogger(__name__)

# After a store failure, skip the store for this long instead of paying for the failure on every request.
_STORE_RETRY_AFTER_S = 30.0
_STORE_ERRORS = (redis.RedisError, OSError)


class EmbeddingCache:
    """``get_or_compute(key, compute)``: the value for ``key``, computed at most once.

    ``store``: a ``DiskEmbeddingStore``/``RedisEmbeddingStore`` (``get``, ``put`` -> stored?,
    ``delete``, ``contains``, ``lock``, ``count``, ``stats``), or None for an in-process cache only.
    """

    def __init__(self, capacity: int, store=None, namespace: str = "", half: bool = True):
        self.capacity = capacity
        self.store = store
        self._namespace = namespace
        self._half = half
        self._values: OrderedDict[str, Any] = OrderedDict()
        self._pending: dict[str, Future] = {}  # keys being computed or read -> their result, for waiters
        self._lock = threading.Lock()  # guards _values and _pending
        self._store_skip_until = 0.0  # time.monotonic()
        self._local_counts = {"hits": 0, "misses": 0, "waits": 0}  # without a store
        self._thread = threading.local()  # .computed: whether this thread's last call computed

    @classmethod
    def from_settings(cls, settings, namespace: str = "") -> "EmbeddingCache":
        """The cache the server uses: Redis with ``REDIS_URL``, else files under ``MODEL_DIR``."""
        if settings.redis_url:
            from backend.embeddings.redis_store import RedisEmbeddingStore

            store = RedisEmbeddingStore(settings.redis_url, settings.embedding_store_bytes)
        else:
            from backend.embeddings.disk_store import DiskEmbeddingStore

            store = DiskEmbeddingStore(settings.model_dir / "embeddings", settings.embedding_store_bytes,
                                       settings.embedding_store_min_free_bytes)
        return cls(settings.embedding_cache_size, store, namespace, half=settings.embedding_store_half)

    def get_or_compute(self, key: str, compute: Callable[[], Any], background: bool = False,
                       shapes: Any = None) -> Any:
        """The value for ``key``: from memory, else from the store, else ``compute()`` (then stored).

        Concurrent calls for the same key wait for the first caller's computation and get its value
        or its exception. ``background``: a call ahead of any request (not counted in the hit rate);
        its computation may stop with ``Preempted`` when a request needs the encoder. ``shapes``:
        the tensor shapes the caller takes (``codec.shapes_of``); a stored entry of others is
        computed again.
        """
        self._thread.computed = False
        while True:
            with self._lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    value = self._values[key]
                    break
                pending = self._pending.get(key)
                is_owner = pending is None
                if is_owner:
                    pending = self._pending[key] = Future()
            if not is_owner:
                try:
                    value = pending.result()
                except Preempted:
                    if background:
                        raise
                    continue  # the computation we waited for gave way: this request computes it
                self._count("waits", background)
                return value
            return self._own(key, compute, pending, background, shapes)
        self._count("hits", background)
        return value

    def computed_last(self) -> bool:
        """Whether this thread's last ``get_or_compute`` ran ``compute`` (rather than finding the value,
        or waiting for another thread's or process's computation)."""
        return getattr(self._thread, "computed", False)

    def contains(self, key: str) -> bool:
        """Whether ``key`` is embedded already (in this process or the store), without computing."""
        with self._lock:
            if key in self._values:
                return True
        return bool(self._shared("read", lambda store: store.contains(self._store_key(key))))

    def stats(self) -> dict:
        """For /health: where the store is, its bytes/entries/limit, and the hit rate of requests
        (every process's, for a store)."""
        with self._lock:
            local = {"in_process_entries": len(self._values)}
            if self.store is None:
                local.update(self._local_counts)
        if self.store is None:
            stats = {"store": "in-process", **local}
        else:
            shared = self._shared("read", lambda store: store.stats())
            stats = {"store": self.store.kind, **local, **(shared or {"error": "store unavailable, see the log"})}
        requests = sum(stats.get(name, 0) for name in ("hits", "misses", "waits"))
        stats["hit_rate"] = round(stats.get("hits", 0) / requests, 4) if requests else None
        return stats

    # -- the owner of a key's computation --------------------------------------------------------

    def _own(self, key: str, compute: Callable[[], Any], pending: Future, background: bool, shapes: Any) -> Any:
        try:
            value = self._read(key, shapes)
            outcome = "hits"
            if value is None:
                value = self._compute_once_per_cluster(key, compute, background, shapes)
                outcome = "misses" if self.computed_last() else "waits"  # waits: another process computed it
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
        self._count(outcome, background)
        return value

    def _compute_once_per_cluster(self, key: str, compute: Callable[[], Any], background: bool, shapes: Any) -> Any:
        if self.store is None or not self._store_usable():
            return self._computed(compute, background)
        store_key = self._store_key(key)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.store.lock(store_key))
            except _STORE_ERRORS as exc:  # the lock itself failed: compute without it
                self._store_failed("lock", exc)
                return self._computed(compute, background)
            value = self._read(key, shapes)  # another process computed it while we waited
            if value is not None:
                return value
            data = codec.encode(self._computed(compute, background), store_key, self._half)
            if self._shared("write", lambda store: store.put(store_key, data)) is False:
                self._shared("write", lambda store: store.count("writes_skipped"))
            return codec.decode(data, store_key)  # what every process reads from the store

    def _computed(self, compute: Callable[[], Any], background: bool) -> Any:
        self._thread.computed = True
        if background:
            return compute()
        with foreground_waiting():  # background computations of this process give way
            return compute()

    def _read(self, key: str, shapes: Any = None) -> Any | None:
        store_key = self._store_key(key)
        data = self._shared("read", lambda store: store.get(store_key))
        if data is None:
            return None
        try:
            return codec.decode(data, store_key, shapes)
        except codec.CodecError as exc:  # never served: dropped, so it is logged once, and computed again
            logger.warning("embedding store: dropping the entry of %s (%s); computing it again", key, exc)
            self._shared("write", lambda store: store.delete(store_key))
            self._shared("write", lambda store: store.count("bad_entries"))
            return None

    def _count(self, outcome: str, background: bool) -> None:
        """Count one request's ``outcome`` ("hits", "misses", "waits"); background work is not counted."""
        if background:
            return
        if self.store is None:
            with self._lock:
                self._local_counts[outcome] += 1
            return
        self._shared("write", lambda store: store.count(outcome))

    # -- store failures ----------------------------------------------------------------------------

    def _store_key(self, key: str) -> str:
        return f"{self._namespace}/{key}" if self._namespace else key

    def _store_usable(self) -> bool:
        return time.monotonic() >= self._store_skip_until

    def _shared(self, action: str, call: Callable[[Any], Any]) -> Any | None:
        """``call(store)``, or None when there is no store or it fails or recently failed."""
        if self.store is None or not self._store_usable():
            return None
        try:
            return call(self.store)
        except _STORE_ERRORS as exc:
            self._store_failed(action, exc)
            return None

    def _store_failed(self, action: str, exc: Exception) -> None:
        self._store_skip_until = time.monotonic() + _STORE_RETRY_AFTER_S
        logger.warning("embedding store (%s): %s failed (%s: %s); using the in-process cache only for the next %.0f s",
                       self.store.kind, action, type(exc).__name__, str(exc)[:200], _STORE_RETRY_AFTER_S)
