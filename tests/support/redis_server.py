"""A throw-away ``redis-server`` on a free localhost port, for the scale-out (RQ) tests (the
``redis_server`` fixture of tests/conftest.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from support.processes import ServerProcess, ServerStartError, free_port

STARTUP_TIMEOUT_S = 20.0


class RedisServer:
    def __init__(self, binary: str, workdir: Path):
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self._argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                      "--dir", str(workdir)]
        self._workdir = workdir
        self.start_again()

    def start_again(self) -> None:
        """(After ``stop``:) a redis-server on the same port, empty (nothing is saved)."""
        self.process = ServerProcess("redis-server", self._argv, dict(os.environ), cwd=self._workdir,
                                     log_path=self._workdir / "redis.log")
        self._wait_for_ping()

    def _wait_for_ping(self) -> None:
        from redis import Redis
        from redis.exceptions import ConnectionError

        client = Redis.from_url(self.url)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except ConnectionError:
                time.sleep(0.1)
        self.process.stop()
        raise ServerStartError(f"redis-server did not answer PING within {STARTUP_TIMEOUT_S:.0f} s\n{self.process.log_tail()}")

    def stop(self) -> None:
        self.process.stop()
