"""https downloads: certificates are checked (against a test CA made by trustme), and the
per-request total deadline holds over TLS for servers that drip the handshake, the
response headers or the body.

The watchdog cuts a TLS socket with the base ``socket.shutdown`` (leaving the TLS state
alone); these tests show that ends the request as the deadline error, not a hang. Timing
bounds are generous (a 1 s deadline, asserted under 10 s) so a loaded machine passes.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import trustme

from clipcrawl.transforms.download import DownloadConfig, Fetcher, download_sample
from clipcrawl.transforms.status import Status
from tests import hostile_server as hs
from tests.test_download_hostile import JPEG, sample

DEADLINE = 1.0
MARGIN = 9.0  # finished within DEADLINE + MARGIN: a hang would take minutes


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_pem(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def server(ca: trustme.CA) -> Iterator[hs.HostileServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    routes = {
        "/robots.txt": hs.send(b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"),
        "/ok.jpg": hs.send(JPEG),
        "/private/a.jpg": hs.send(JPEG),
        "/drip-head": hs.drip_head(0.05),
        "/drip-body.jpg": hs.drip_body(JPEG, 0.05),
    }
    with hs.HostileServer(routes, tls=context) as running:
        yield running


def tls_config(port: int, **overrides: object) -> DownloadConfig:
    settings: dict[str, object] = {
        "allowed_hosts": (f"127.0.0.1:{port}",), "image_size": 32, "connect_timeout": 5.0, "read_timeout": 0.5,
        "total_timeout": DEADLINE, "per_host_rate": 0.0, "threads": 4, **overrides,
    }
    return DownloadConfig(**settings)  # type: ignore[arg-type]


def fetch_timed(config: DownloadConfig, url: str) -> tuple[str, str | None, float]:
    fetcher = Fetcher(config)
    try:
        started = time.monotonic()
        result = download_sample(fetcher, sample(url))
        return result.status, result.error_message, time.monotonic() - started
    finally:
        fetcher.close()


def test_image_over_https_with_the_test_ca(server: hs.HostileServer, ca_pem: str) -> None:
    status, message, _ = fetch_timed(tls_config(server.port, ca_bundle=ca_pem), server.url("/ok.jpg"))
    assert (status, message) == (Status.PENDING, None)
    # robots.txt came over the same verified connection pool and is honoured.
    status, message, _ = fetch_timed(tls_config(server.port, ca_bundle=ca_pem), server.url("/private/a.jpg"))
    assert status == Status.DISALLOWED_ROBOTS and "disallows /private/a.jpg" in message


def test_an_unknown_ca_is_refused(server: hs.HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    config = tls_config(server.port, respect_robots_txt=False, respect_tdmrep_json=False)
    status, message, _ = fetch_timed(config, server.url("/ok.jpg"))
    assert status == Status.FAILED_TO_DOWNLOAD and "CERTIFICATE_VERIFY_FAILED" in message


def test_requests_ca_bundle_is_honoured(server: hs.HostileServer, ca_pem: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session ignores the environment for proxies, but not for a CA bundle set on purpose."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_pem)
    status, _, _ = fetch_timed(tls_config(server.port), server.url("/ok.jpg"))
    assert status == Status.PENDING


def test_a_missing_ca_bundle_fails_at_setup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Fetcher(DownloadConfig(ca_bundle=str(tmp_path / "nope.pem")))


@pytest.mark.parametrize("path", ["/drip-head", "/drip-body.jpg"])
def test_dripping_over_tls_hits_the_total_deadline(server: hs.HostileServer, ca_pem: str, path: str) -> None:
    # One byte every 50 ms never trips the 0.5 s read timeout; only the deadline watchdog stops it.
    config = tls_config(server.port, ca_bundle=ca_pem, respect_robots_txt=False, respect_tdmrep_json=False)
    status, message, seconds = fetch_timed(config, server.url(path))
    assert (status, message) == (Status.FAILED_TO_DOWNLOAD, f"total_timeout of {DEADLINE:g} s exceeded")
    assert seconds < DEADLINE + MARGIN


class DripProxy:
    """Relays to a local port, passing the server's bytes on one at a time: the TLS
    handshake itself (certificate and all) then takes far longer than any deadline."""

    def __init__(self, target_port: int, interval: float) -> None:
        self._target_port, self._interval = target_port, interval
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def _relay(self, client: socket.socket) -> None:
        with socket.create_connection(("127.0.0.1", self._target_port), timeout=5) as upstream:
            def upload() -> None:
                try:
                    while data := client.recv(65536):
                        upstream.sendall(data)
                except OSError:
                    pass

            threading.Thread(target=upload, daemon=True).start()
            try:
                while data := upstream.recv(65536):
                    for byte in data:
                        client.sendall(bytes([byte]))
                        time.sleep(self._interval)
            except OSError:
                pass  # the client gave up: the point of the test

    def __enter__(self) -> DripProxy:
        self._server = hs.serve_in_thread("127.0.0.1", self._relay)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        assert self._server is not None
        hs.stop(self._server)


@pytest.mark.parametrize("connect_timeout", [0.5, 5.0])
def test_a_dripped_tls_handshake_is_bounded(server: hs.HostileServer, ca_pem: str, connect_timeout: float) -> None:
    """The handshake runs before the watchdog is armed: it is bounded by one socket timeout
    (at most the time left) over the whole handshake. Short connect timeout: a timeout
    error; long one: the deadline error. Either way it ends within the bounds."""
    with DripProxy(server.port, 0.02) as proxy:
        config = tls_config(proxy.port, ca_bundle=ca_pem, connect_timeout=connect_timeout, respect_robots_txt=False,
                            respect_tdmrep_json=False)
        status, message, seconds = fetch_timed(config, f"https://127.0.0.1:{proxy.port}/ok.jpg")
    assert status == Status.FAILED_TO_DOWNLOAD
    if connect_timeout < DEADLINE:
        assert "timed out" in message
    else:
        assert message == f"total_timeout of {DEADLINE:g} s exceeded"
    assert seconds < DEADLINE + MARGIN
