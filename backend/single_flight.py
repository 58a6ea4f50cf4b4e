"""One run per key at a time: callers that ask for a key while its run is in flight wait for that
run and get its result (or a copy of its exception) instead of starting their own. Used so that
many annotators opening the same new image cause one download."""

from __future__ import annotations

import copy
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class _Run:
    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    def __init__(self):
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def run(self, key: str, compute: Callable[[], T], wait_s: float, on_timeout: Callable[[], Exception]) -> T:
        """``compute()``'s result for ``key``, computed once however many callers ask at once. A caller
        that finds a run in flight waits at most ``wait_s`` for it, then raises ``on_timeout()``."""
        with self._lock:
            run = self._runs.get(key)
            leading = run is None
            if leading:
                run = self._runs[key] = _Run()
        if leading:
            try:
                run.value = compute()
                return run.value
            except BaseException as exc:
                run.error = exc
                raise
            finally:
                with self._lock:
                    del self._runs[key]
                run.done.set()
        if not run.done.wait(wait_s):
            raise on_timeout()
        if run.error is not None:
            raise copy.copy(run.error)  # each waiter raises its own (tracebacks are per raise)
        return run.value

