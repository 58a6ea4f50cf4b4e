"""A throw-away ``redis-server`` on a free localhost port, for the scale-out (RQ) tests.

Without the ``redis-server`` binary (Debian package ``redis-server``) the tests are skipped locally
with that reason, but fail on CI (``CI=true``), where a silent skip would hide that nothing ran.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import ServerProcess, ServerStartError, free_port

STARTUP_TIMEOUT_S = 20.0


class RedisServer:
    def __init__(self, binary: str, workdir: Path):
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(workdir)]
        self.process = ServerProcess("redis-server", argv, dict(os.environ), cwd=workdir, log_path=workdir / "redis.log")
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


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
