"""Waiting out an outage of something every part of a job needs (Label Studio): waits that double
from ``base_s`` up to ``cap_s``, each drawn between half and all of that (jitter: the workers of one
job, and the jobs of several backends, do not all come back in the same second).
"""

from __future__ import annotations

import random

OUTAGE_WAIT_BASE_S = 2.0
OUTAGE_WAIT_CAP_S = 60.0


class Backoff:
    def __init__(self, base_s: float = OUTAGE_WAIT_BASE_S, cap_s: float = OUTAGE_WAIT_CAP_S, rng=random):
        self.base_s, self.cap_s, self._rng = base_s, cap_s, rng
        self.waits = 0

    def next_wait(self) -> float:
        """Seconds to wait before the next try."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.waits, 30))
        self.waits += 1
        return ceiling * self._rng.uniform(0.5, 1.0)
