"""How many image downloads run at once: at most ``total`` per process and ``per_host`` per origin
(scheme, host, port), so slow hosts cannot hold every slot while a fast host waits. A caller waits
for a slot up to the time its own deadline leaves, and is told when that passed."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager


class NoSlot(Exception):
    """No slot came free within the time the caller could wait."""


class DownloadSlots:
    def __init__(self, total: int, per_host: int):
        self.total = max(1, total)
        self.per_host = max(1, min(per_host, self.total))
        self._changed = threading.Condition()
        self._busy = 0
        self._by_host: Counter = Counter()

    @contextmanager
    def slot(self, host, wait_s: float):
        """Holds a slot for ``host`` (any hashable, e.g. an origin tuple) while the block runs;
        NoSlot when none comes free within ``wait_s`` seconds."""
        give_up_at = time.monotonic() + wait_s
        with self._changed:
            while self._busy >= self.total or self._by_host[host] >= self.per_host:
                left = give_up_at - time.monotonic()
                if left <= 0:
                    raise NoSlot(f"no download slot came free within {wait_s:g} s")
                self._changed.wait(left)
            self._busy += 1
            self._by_host[host] += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._by_host[host] -= 1
                if not self._by_host[host]:
                    del self._by_host[host]
                self._changed.notify_all()

