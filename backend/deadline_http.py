"""HTTP requests bounded by one overall deadline, whatever the server does.

``requests``' ``timeout`` bounds each socket operation, not the whole exchange: a server that sends
one header byte per second keeps every read short and the request open forever. Here each request
runs in a ``DeadlineSession`` whose sockets a timer shuts down when the deadline passes, which wakes
any read or TLS handshake blocked on them; the caller then sees ``DeadlineExceeded``. Per-operation
timeouts are the time left, so connecting is bounded too. Redirects are never followed here: the
caller follows them, re-deciding auth and allowed hosts per hop.
"""

from __future__ import annotations

import contextvars
import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_ACTIVE: contextvars.ContextVar["Deadline | None"] = contextvars.ContextVar("active_deadline", default=None)


class DeadlineExceeded(requests.Timeout):
    """The deadline passed (a ``requests.Timeout``, so callers handling timeouts handle it)."""


class Deadline:
    """A point in time (``time.monotonic()``) after which the sockets registered with it are shut down."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._expired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left; raises DeadlineExceeded when none are."""
        left = self.at - time.monotonic()
        if left <= 0 or self._expired:
            raise DeadlineExceeded(f"deadline of {self.seconds:g} s passed")
        return left

    @property
    def expired(self) -> bool:
        return self._expired or time.monotonic() >= self.at

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if self._expired:
                _shutdown(sock)
            self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Registering:
    """Mixin for urllib3 connections: every new socket joins the active deadline (before any TLS
    handshake, so a trickled handshake is cut too)."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = _ACTIVE.get()
        if deadline is not None:
            deadline.register(sock)
        return sock


class _HTTPConnection(_Registering, HTTPConnection):
    pass


class _HTTPSConnection(_Registering, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineSession:
    """A ``requests`` session for one exchange (all its redirect hops) within ``seconds``.

    Use as a context manager; ``request`` takes ``requests.Session.request``'s arguments, never
    follows redirects, ignores proxy/netrc settings from the environment (a ``.netrc`` would add
    credentials), and raises DeadlineExceeded once the deadline has passed, also when the deadline
    cut a transfer short. ``check()`` raises it between reads of a streamed body.
    """

    def __init__(self, seconds: float):
        self.deadline = Deadline(seconds)
        self._session = requests.Session()
        self._session.trust_env = False
        adapter = _DeadlineAdapter(pool_connections=1, pool_maxsize=1)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __enter__(self) -> "DeadlineSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.deadline.cancel()
        self._session.close()

    def check(self) -> None:
        self.deadline.remaining()

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        left = self.deadline.remaining()
        token = _ACTIVE.set(self.deadline)
        try:
            return self._session.request(method, url, allow_redirects=False, timeout=(left, left), **kwargs)
        except requests.RequestException:
            if self.deadline.expired:
                raise DeadlineExceeded(f"deadline of {self.deadline.seconds:g} s passed") from None
            raise
        finally:
            _ACTIVE.reset(token)

    def get_redirect_target(self, response: requests.Response) -> str | None:
        """The absolute URL a 3xx ``response`` points to (None if it is no redirect)."""
        location = self._session.get_redirect_target(response)
        return None if location is None else requests.compat.urljoin(response.url, location)
