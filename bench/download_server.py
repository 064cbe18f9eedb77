"""The download benchmark's web: one threaded HTTP/1.1 server per loopback address.

Run as its own process so its CPU time is never counted against a downloader:

    python bench/download_server.py CORPUS_DIR --count N --seed S --hosts H

It prints one JSON line, ``{"origins": ["http://127.0.0.1:PORT", ...]}``, then serves until
its stdin closes. Every address in 127.0.0.0/8 is loopback on Linux, so ``--hosts 32``
gives 32 distinct hosts for per-host politeness without leaving the machine. Any host
answers any path of the mix: ``/img/NNNNNN.ext`` per ``download_corpus.plan``, and an
allow-all ``/robots.txt``. Keep-alive is on, as on real image hosts; image bodies go out
with ``sendfile``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import download_corpus  # a sibling script, not a package

SLOW_SECONDS = 6.0  # longer than any timeout the bench gives a downloader
ROBOTS = b"User-agent: *\nAllow: /\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client timed out and hung up: expected

    def _answer(self) -> None:
        if self.path == "/robots.txt":
            self._send(200, "text/plain", ROBOTS)
            return
        item = self.server.items.get(self.path)
        if item is None:
            self._send(404, "text/plain", b"not found")
            return
        time.sleep(item.latency_s)
        if item.kind == "404":
            self._send(404, "text/plain", b"not found")
            return
        if item.kind == "slow":
            time.sleep(SLOW_SECONDS)
        path = self.server.folder / Path(item.path).name
        with path.open("rb") as body:
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", download_corpus.CONTENT_TYPES[item.ext])
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.connection.sendfile(body)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        """Quiet."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    items: dict[str, download_corpus.Item]
    folder: Path

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up on slow answers are part of the mix."""


def serve(folder: Path, count: int, seed: int, hosts: int) -> list[str]:
    """Start one server per address 127.0.0.1 .. 127.0.0.{hosts}; their origins."""
    items = {item.path: item for item in download_corpus.plan(count, seed)}
    origins = []
    for host_no in range(1, hosts + 1):
        server = _Server((f"127.0.0.{host_no}", 0), _Handler)
        server.items, server.folder = items, folder
        threading.Thread(target=server.serve_forever, daemon=True, name=f"bench-host-{host_no}").start()
        origins.append(f"http://127.0.0.{host_no}:{server.server_address[1]}")
    return origins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hosts", type=int, default=1)
    args = parser.parse_args()
    if not 1 <= args.hosts <= 254:
        parser.error("--hosts must be 1..254")
    origins = serve(args.folder, args.count, args.seed, args.hosts)
    print(json.dumps({"origins": origins}), flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin (or exits)


if __name__ == "__main__":
    main()
