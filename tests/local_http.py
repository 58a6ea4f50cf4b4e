"""Real HTTP servers on 127.0.0.1 for tests: a fake Label Studio, foreign hosts, trickling servers.

``LocalServer.routes`` maps a path (without query) to a handler ``(request_handler) -> None`` that
writes the whole response; every request is recorded (method, path with query, headers, body).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes


class LocalServer:
    def __init__(self):
        self.routes: dict[str, callable] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                route = server.routes.get(self.path.split("?")[0])
                try:
                    if route is None:
                        respond(self, 404, b"not found")
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def respond(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    handler.send_response(status)
    for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def content(body: bytes, content_type: str = "image/png"):
    return lambda handler: respond(handler, 200, body, {"Content-Type": content_type})


def delayed(route, delay_s: float):
    """``route``, answered after ``delay_s`` seconds."""

    def slow_route(handler):
        time.sleep(delay_s)
        route(handler)

    return slow_route


def redirect(location: str, status: int = 302, delay_s: float = 0.0):
    def route(handler):
        time.sleep(delay_s)
        respond(handler, status, b"", {"Location": location})

    return route


def trickle_headers(delay_s: float, count: int = 400):
    """A status line, then one header byte every ``delay_s`` (each read is quick, the whole never ends)."""

    def route(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        handler.wfile.flush()
        for _ in range(count):
            time.sleep(delay_s)
            handler.wfile.write(b"X")
            handler.wfile.flush()

    return route
