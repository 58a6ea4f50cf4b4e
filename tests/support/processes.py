"""Child server processes for integration tests: start, wait until healthy, stop, show the log.

Each server runs in its own process group (so a server's own children stop with it) and writes
stdout and stderr to a log file whose tail goes into every failure message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(url: str, timeout_s: float = 120.0) -> None:
    """Poll ``<url>/health`` until it answers 2xx; raises ServerStartError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise ServerStartError(f"the backend at {url} did not answer /health within {timeout_s:.0f} s")


class ServerStartError(RuntimeError):
    """A server exited or never answered its health check; the message carries its log tail."""


class ServerProcess:
    """One server started from ``argv`` with exactly ``env`` (nothing inherited implicitly)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self._process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        """The server's process id (its children, e.g. gunicorn workers, are in its process group)."""
        return self._process.pid

    def exit_code(self) -> int | None:
        """None while the process runs."""
        return self._process.poll()

    def wait_until_healthy(
        self,
        url: str,
        timeout_s: float,
        healthy: Callable[[requests.Response], bool],
        auth: tuple[str, str] | None = None,
    ) -> float:
        """Poll ``url`` (with Basic ``auth`` if given) until ``healthy(response)``; returns the seconds it took.

        Raises ServerStartError when the process exits or ``timeout_s`` passes first.
        """
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self._process.poll() is not None:
                raise ServerStartError(f"{self.name} exited with code {self._process.returncode}\n{self.log_tail()}")
            try:
                if healthy(requests.get(url, auth=auth, timeout=2)):
                    return time.monotonic() - started
            except requests.RequestException:
                pass  # not listening yet
            time.sleep(0.2)
        raise ServerStartError(
            f"{self.name} did not become healthy at {url} within {timeout_s:.0f} s\n{self.log_tail()}"
        )

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``grace_s``."""
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])
