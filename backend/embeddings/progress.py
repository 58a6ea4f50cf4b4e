"""How embedding ahead is doing, for ``GET /jobs`` and ``/health``: images done (embedded now, or
found in the store already), errors per task, and the rate over the recent ones.

``LocalProgress`` counts in this process (the embedded scheduler); ``RedisProgress`` counts in
Redis, where every ``python -m backend worker`` adds to it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

from backend.jobs.rates import eta_s, per_minute

ERRORS_KEPT = 20  # the most recent errors shown
RATE_WINDOW = 50  # the rate is taken over the last this many embeddings


def _summary(embedded: int, stored_already: int, failed: int, dropped: int, finish_times: list[float],
             errors: list[dict]) -> dict:
    # the first finish time starts the measured span: the items after it were done within it
    span = finish_times[-1] - finish_times[0] if finish_times else 0.0
    rate = per_minute(len(finish_times) - 1, span)
    return {"embedded": embedded, "stored_already": stored_already, "failed": failed,
            "done": embedded + stored_already + failed, "dropped": dropped, "rate_per_min": rate, "errors": errors}


def work_status(runs_in: str, queued: dict, running: int, progress: dict) -> dict:
    """What ``GET /jobs`` shows of embedding ahead: queue, counts, total, rate and ETA of the queued."""
    waiting = queued.get("total", 0) + running
    return {"runs_in": runs_in, "queued": queued, "running": running, **progress,
            "total": progress["done"] + waiting, "eta_s": eta_s(waiting, progress["rate_per_min"])}


class LocalProgress:
    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {"embedded": 0, "stored_already": 0, "failed": 0, "dropped": 0}
        self._finish_times: deque[float] = deque(maxlen=RATE_WINDOW)
        self._errors: deque[dict] = deque(maxlen=ERRORS_KEPT)

    def record(self, outcome: str, task_id: int | None = None, error: str | None = None) -> None:
        """``outcome``: "embedded", "stored_already", "failed" (with ``error``, a message safe to show),
        or "dropped" (not queued: the queue was full)."""
        with self._lock:
            self._counts[outcome] += 1
            if outcome == "embedded":
                self._finish_times.append(time.time())
            if error is not None:
                self._errors.appendleft({"task": task_id, "error": error, "time": round(time.time(), 1)})

    def summary(self) -> dict:
        with self._lock:
            return _summary(**self._counts, finish_times=list(self._finish_times), errors=list(self._errors))


class RedisProgress:
    def __init__(self, connection, prefix: str = "segmentation-backend:embed-ahead:"):
        self._redis = connection
        self._counts, self._times, self._errors = prefix + "counts", prefix + "finish-times", prefix + "errors"

    def record(self, outcome: str, task_id: int | None = None, error: str | None = None) -> None:
        pipe = self._redis.pipeline()
        pipe.hincrby(self._counts, outcome, 1)
        if outcome == "embedded":
            pipe.lpush(self._times, time.time()).ltrim(self._times, 0, RATE_WINDOW - 1)
        if error is not None:
            entry = json.dumps({"task": task_id, "error": error, "time": round(time.time(), 1)})
            pipe.lpush(self._errors, entry).ltrim(self._errors, 0, ERRORS_KEPT - 1)
        pipe.execute()

    def summary(self) -> dict:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._counts).lrange(self._times, 0, -1).lrange(self._errors, 0, -1)
        counts, times, errors = pipe.execute()
        counts = {key.decode(): int(value) for key, value in counts.items()}
        return _summary(*(counts.get(key, 0) for key in ("embedded", "stored_already", "failed", "dropped")),
                        finish_times=sorted(float(t) for t in times), errors=[json.loads(e) for e in errors])
