"""A loopback HTTP server with scripted answers, for tests and the offline demo.

No machine running the tests or the demo can reach the internet, so the download stage is
exercised against this server on 127.0.0.1: good images, HTTP errors, redirects, slow and
oversized bodies, opt-out headers. Stdlib only; it serves from a daemon thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

Headers = Mapping[str, str] | Sequence[tuple[str, str]]  # pairs allow a header to repeat


@dataclasses.dataclass(frozen=True)
class Route:
    """The scripted answer for one path."""

    status: int = 200
    body: bytes = dataclasses.field(default=b"", repr=False)
    content_type: str = "image/jpeg"
    headers: Headers = dataclasses.field(default_factory=dict)
    delay_seconds: float = 0.0  # wait before sending the status line (read-timeout tests)
    redirect_to: str | None = None  # a path or URL; answered with 302 unless status is a 3xx
    drip_seconds: float = 0.0  # pause before each body byte (total-deadline tests)
    send_content_length: bool = True  # False: the body ends when the connection closes


NOT_FOUND = Route(status=404, body=b"not found", content_type="text/plain")


@dataclasses.dataclass(frozen=True)
class SeenRequest:
    """A request as received: lets a test check what the client sent, or that it never came."""

    path: str
    headers: Mapping[str, str]


class ImageServer:
    """``with ImageServer({"/a.jpg": Route(body=...)}) as server: server.url("/a.jpg")``."""

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        self._routes: dict[str, Route] = dict(routes or {})
        self._lock = threading.Lock()
        self._seen: list[SeenRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, path: str, route: Route) -> None:
        self._routes[path] = route

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ImageServer is not running; use it as a context manager")
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path if path.startswith('/') else '/' + path}"

    @property
    def seen(self) -> list[SeenRequest]:
        """Requests received so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    @property
    def requested(self) -> list[str]:
        return [request.path for request in self.seen]

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being answered at once (shows client concurrency)."""
        with self._lock:
            return self._max_in_flight

    @contextlib.contextmanager
    def _answering(self, path: str, headers: Mapping[str, str]) -> Iterator[Route]:
        with self._lock:
            self._seen.append(SeenRequest(path, dict(headers)))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield self._routes.get(urllib.parse.urlsplit(path).path, NOT_FOUND)
        finally:
            with self._lock:
                self._in_flight -= 1

    def __enter__(self) -> "ImageServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.image_server = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="image-server"
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    image_server: ImageServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-answer are the point of some tests: stay quiet."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection; bodies may end at close

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        with self.server.image_server._answering(self.path, self.headers) as route:
            try:
                self._answer(route)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout, size cap): expected

    def _answer(self, route: Route) -> None:
        if route.delay_seconds:
            time.sleep(route.delay_seconds)
        status = route.status
        if route.redirect_to is not None and not 300 <= status < 400:
            status = 302
        self.send_response(status)
        if route.redirect_to is not None:
            self.send_header("Location", route.redirect_to)
        self.send_header("Content-Type", route.content_type)
        if route.send_content_length:
            self.send_header("Content-Length", str(len(route.body)))
        headers = route.headers.items() if isinstance(route.headers, Mapping) else route.headers
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not route.drip_seconds:
            self.wfile.write(route.body)
            return
        for offset in range(len(route.body)):
            time.sleep(route.drip_seconds)
            self.wfile.write(route.body[offset : offset + 1])
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        """Quiet: test output and the demo's console stay readable."""
