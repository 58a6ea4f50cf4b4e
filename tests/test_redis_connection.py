"""Every Redis client has a connect and a socket timeout: a Redis that accepts connections but
never answers fails a call instead of hanging it."""

import socket
import time

import pytest
import redis

from backend import redis_connection
from backend.redis_connection import redis_client


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


def test_a_silent_redis_times_out(silent_server, monkeypatch):
    monkeypatch.setattr(redis_connection, "SOCKET_TIMEOUT_S", 0.3)
    client = redis_client(silent_server)
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert time.monotonic() - started < 5


def test_timeouts_on_every_client_and_room_for_blocking_reads():
    plain = redis_client("redis://127.0.0.1:1/0").connection_pool.connection_kwargs
    assert plain["socket_connect_timeout"] == redis_connection.CONNECT_TIMEOUT_S
    assert plain["socket_timeout"] == redis_connection.SOCKET_TIMEOUT_S
    worker = redis_client("redis://127.0.0.1:1/0", blocking_reads_s=405).connection_pool.connection_kwargs
    assert worker["socket_timeout"] == redis_connection.SOCKET_TIMEOUT_S + 405
    with pytest.raises(ValueError):
        redis_client("redis://127.0.0.1:1/0", blocking_reads_s=-1)
