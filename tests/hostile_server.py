"""A hostile HTTP server on 127.0.0.1 for downloader tests: raw sockets, so it can lie.

Each endpoint is a handler that writes whatever bytes it likes: wrong Content-Length,
headers dripped a byte at a time, a reset in the middle of a body, a status line that is
not HTTP. One request per connection (``Connection: close``), so concurrent connections
equal concurrent requests; the server records the most it saw at once per Host header.
"""

from __future__ import annotations

import collections
import dataclasses
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


Handler = Callable[[socket.socket, Request], None]


def response_head(status: int = 200, headers: Iterable[tuple[str, str]] = (), reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send(body: bytes = b"", status: int = 200, content_type: str | None = "image/jpeg",
         headers: Iterable[tuple[str, str]] = (), content_length: int | None | bool = True) -> Handler:
    """A handler that answers with ``body``; ``content_length`` True: the truth, an int: a lie."""
    all_headers = list(headers)
    if content_type is not None:
        all_headers.append(("Content-Type", content_type))
    if content_length is True:
        all_headers.append(("Content-Length", str(len(body))))
    elif content_length is not False and content_length is not None:
        all_headers.append(("Content-Length", str(content_length)))

    def handle(conn: socket.socket, request: Request) -> None:
        conn.sendall(response_head(status, all_headers) + body)

    return handle


def redirect(location: str, status: int = 302) -> Handler:
    return send(b"", status=status, content_type=None, headers=[("Location", location)])


def drip_head(interval: float, status_line: bytes = b"HTTP/1.1 200 OK\r\n") -> Handler:
    """Slowloris: header bytes one at a time, each well inside the read timeout."""
    def handle(conn: socket.socket, request: Request) -> None:
        for byte in status_line + b"X-Slow: " + b"a" * 10_000:
            conn.sendall(bytes([byte]))
            time.sleep(interval)

    return handle


def drip_body(body: bytes, interval: float) -> Handler:
    def handle(conn: socket.socket, request: Request) -> None:
        conn.sendall(response_head(200, [("Content-Type", "image/jpeg"), ("Content-Length", str(len(body)))]))
        for offset in range(len(body)):
            conn.sendall(body[offset : offset + 1])
            time.sleep(interval)

    return handle


def stall(seconds: float) -> Handler:
    def handle(conn: socket.socket, request: Request) -> None:
        time.sleep(seconds)

    return handle


def reset_after(prefix: bytes) -> Handler:
    """Send ``prefix``, then abort the connection with a TCP RST."""
    def handle(conn: socket.socket, request: Request) -> None:
        conn.sendall(prefix)
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return handle


def endless(chunk: bytes = b"\xff" * 65536) -> Handler:
    """A body with no length that never ends (until the client hangs up)."""
    def handle(conn: socket.socket, request: Request) -> None:
        conn.sendall(response_head(200, [("Content-Type", "image/jpeg")]))
        for _ in range(10_000):
            conn.sendall(chunk)

    return handle


def raw(data: bytes) -> Handler:
    def handle(conn: socket.socket, request: Request) -> None:
        conn.sendall(data)

    return handle


def sequence(*handlers: Handler) -> Handler:
    """The n-th request gets the n-th handler (the last one repeats)."""
    calls = iter(handlers)
    last: list[Handler] = []

    def handle(conn: socket.socket, request: Request) -> None:
        handler = next(calls, None)
        if handler is not None:
            last[:] = [handler]
        last[0](conn, request)

    return handle


NOT_FOUND = send(b"not found", status=404, content_type="text/plain")


class HostileServer:
    """``with HostileServer({"/path": handler}) as server: server.url("/path")``."""

    def __init__(self, routes: Mapping[str, Handler], host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.routes = dict(routes)
        self._host = host
        self._tls = tls  # a server-side context: the same routes over https
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self._open: collections.Counter[str] = collections.Counter()
        self.max_concurrent: collections.Counter[str] = collections.Counter()
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "use HostileServer as a context manager"
        return self._server.server_address[1]

    @property
    def authority(self) -> str:
        return f"{self._host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{'https' if self._tls else 'http'}://{self.authority}{path}"

    def paths(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.requests]

    def _serve(self, conn: socket.socket) -> None:
        request = _read_request(conn)
        if request is None:
            return
        with self._lock:
            self.requests.append(request)
            self._open[request.host] += 1
            self.max_concurrent[request.host] = max(self.max_concurrent[request.host], self._open[request.host])
        try:
            self.routes.get(request.path.split("?", 1)[0], NOT_FOUND)(conn, request)
        except OSError:
            pass  # the client hung up (deadline, size cap): that is the point of many cases
        finally:
            with self._lock:
                self._open[request.host] -= 1

    def _accept(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        if self._tls is None:
            self._serve(conn)
            return
        try:
            wrapped = self._tls.wrap_socket(conn, server_side=True)
        except OSError:  # ssl.SSLError too: the client gave up during the handshake
            return
        with wrapped:  # the wrapped socket owns the connection now
            self._serve(wrapped)

    def __enter__(self) -> HostileServer:
        self._server = serve_in_thread(self._host, self._accept)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        assert self._server is not None
        stop(self._server)


def serve_in_thread(host: str, handle: Callable[[socket.socket], None]) -> socketserver.ThreadingTCPServer:
    """A threading TCP server on ``host`` and a free port that calls ``handle(conn)`` per connection."""

    class _Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            handle(self.request)

    server = socketserver.ThreadingTCPServer((host, 0), _Handler, bind_and_activate=False)
    server.request_queue_size = 128  # a full backlog costs a 1 s SYN retry
    server.daemon_threads = True
    server.server_bind()
    server.server_activate()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop(server: socketserver.ThreadingTCPServer) -> None:
    server.shutdown()
    server.server_close()


def _read_request(conn: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, path, _ = (head[0].split(" ", 2) + ["", ""])[:3]
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, path, headers)
