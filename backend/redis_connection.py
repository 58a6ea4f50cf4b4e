"""The one way this backend connects to Redis (``REDIS_URL``): every client has a connect timeout
and a socket timeout, so a Redis that stops answering fails a call within seconds instead of
hanging a request, a job or a worker forever.

Commands that block on purpose (RQ's worker waits on its queues with ``BLPOP``/``BLMOVE``) say so
with ``blocking_reads_s``: the socket timeout then covers that wait plus the usual margin.
"""

from __future__ import annotations

import redis

# Redis answers in milliseconds on a LAN; a connection that takes longer than this is not coming.
CONNECT_TIMEOUT_S = 0.5
# The slowest ordinary command (a multi-megabyte embedding over a busy link) stays well below this.
SOCKET_TIMEOUT_S = 10.0


def redis_client(url: str, blocking_reads_s: float = 0.0) -> redis.Redis:
    """A client for ``url`` with our timeouts. ``blocking_reads_s``: the longest blocking command
    this client issues (e.g. an RQ worker's dequeue timeout); 0 for clients that never block."""
    if blocking_reads_s < 0:
        raise ValueError(f"blocking_reads_s must be >= 0, got {blocking_reads_s}")
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                socket_timeout=SOCKET_TIMEOUT_S + blocking_reads_s)
