"""Every way a server can misbehave ends as a row with a status, and the batch finishes.

One endpoint of the hostile loopback server per case; timeouts are a fraction of a second
so the slow cases stay cheap. The guard allows only this server's host:port.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator

import brotli
import numpy as np
import pytest
from PIL import Image

from clipcrawl.transforms.download import DownloadConfig, Fetcher, download_sample
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status
from tests.conftest import download_batches
from tests import hostile_server as hs


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


NOISE = Image.effect_noise((240, 160), 60).convert("RGB")
JPEG = encoded(NOISE, "JPEG")
PNG = encoded(NOISE, "PNG")
PNG16 = encoded(Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)), "PNG")
_PALETTE = Image.new("RGBA", (40, 40), (255, 0, 0, 255)).convert("P")
PALETTE_TRANSPARENT = encoded(_PALETTE, "PNG", transparency=0)
CMYK = encoded(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG")
_FRAMES = [Image.new("RGB", (40, 40), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
GIF = encoded(_FRAMES[0].convert("P"), "GIF", save_all=True, append_images=[f.convert("P") for f in _FRAMES[1:]])
WEBP = encoded(_FRAMES[0], "WEBP", save_all=True, append_images=_FRAMES[1:], duration=100)
BOMB = encoded(Image.new("1", (30_000, 30_000)), "PNG")  # 900 megapixels in a few hundred kB
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
HTML = b"<!doctype html><html><body>hotlinking forbidden</body></html>"

CAP = 200_000  # max_bytes for these tests
ROBOTS = b"User-agent: *\nDisallow: /private/\n\nUser-agent: clipcrawl\nDisallow: /no-clipcrawl/\nDisallow: /private/\n"

ROUTES: dict[str, hs.Handler] = {
    "/robots.txt": hs.send(ROBOTS, content_type="text/plain"),
    "/ok.jpg": hs.send(JPEG),
    "/ok.png": hs.send(PNG, content_type="image/png"),
    "/octet-stream.jpg": hs.send(JPEG, content_type="application/octet-stream"),
    "/sixteen-bit.png": hs.send(PNG16, content_type="image/png"),
    "/palette-transparent.png": hs.send(PALETTE_TRANSPARENT, content_type="image/png"),
    "/cmyk.jpg": hs.send(CMYK),
    "/animated.gif": hs.send(GIF, content_type="image/gif"),
    "/animated.webp": hs.send(WEBP, content_type="image/webp"),
    "/gzip.jpg": hs.send(gzip.compress(JPEG), headers=[("Content-Encoding", "gzip")]),
    "/brotli.jpg": hs.send(brotli.compress(JPEG), headers=[("Content-Encoding", "br")]),
    "/bad-gzip.jpg": hs.send(b"\x1f\x8b\x08\x00garbage" * 10, headers=[("Content-Encoding", "gzip")]),
    "/gzip-bomb.jpg": hs.send(gzip.compress(b"\0" * (5 * CAP)), headers=[("Content-Encoding", "gzip")]),
    "/truncated.jpg": hs.send(JPEG[: len(JPEG) // 3]),
    "/truncated.png": hs.send(PNG[: len(PNG) // 3], content_type="image/png"),
    "/corrupt.jpg": hs.send(JPEG[:20] + bytes(range(256)) * 20),
    "/bomb.png": hs.send(BOMB, content_type="image/png"),
    "/tiny.png": hs.send(encoded(Image.new("RGB", (4, 4)), "PNG"), content_type="image/png"),
    "/html-as.jpg": hs.send(HTML, content_type="image/jpeg"),
    "/page.html": hs.send(HTML * 1000, content_type="text/html"),
    "/image.svg": hs.send(SVG, content_type="image/svg+xml"),
    "/empty.jpg": hs.send(b""),
    "/403": hs.send(b"forbidden", status=403, content_type="text/plain"),
    "/404": hs.send(b"gone", status=404, content_type="text/plain"),
    "/500": hs.send(b"oops", status=500, content_type="text/plain"),
    "/length-short.jpg": hs.send(JPEG, content_length=len(JPEG) // 2),
    "/length-long.jpg": hs.send(JPEG, content_length=len(JPEG) * 2),
    "/reset-mid-body.jpg": hs.reset_after(
        hs.response_head(200, [("Content-Type", "image/jpeg"), ("Content-Length", str(len(JPEG)))]) + JPEG[:500]
    ),
    "/close-without-answer": hs.raw(b""),
    "/not-http": hs.raw(b"SSH-2.0-OpenSSH_9.6\r\n"),
    "/slowloris-head": hs.drip_head(0.05),
    "/slowloris-body.jpg": hs.drip_body(JPEG, 0.05),
    "/stall": hs.stall(2.0),
    "/too-big.jpg": hs.send(b"\xff\xd8\xff" + b"\0" * CAP),
    "/endless.jpg": hs.endless(),
    "/loop-a": hs.redirect("/loop-b"),
    "/loop-b": hs.redirect("/loop-a"),
    **{f"/chain/{n}": hs.redirect(f"/chain/{n + 1}") for n in range(10)},
    "/redirect-ok": hs.redirect("/ok.jpg", status=301),
    "/redirect-other-port": hs.redirect("http://127.0.0.1:1/ok.jpg"),
    "/redirect-other-address": hs.redirect("/ok.jpg"),  # replaced once the port is known
    "/redirect-metadata": hs.redirect("http://169.254.169.254/latest/meta-data/"),
    "/redirect-decimal-loopback": hs.redirect("http://2130706433/ok.jpg"),
    "/redirect-ftp": hs.redirect("ftp://127.0.0.1/ok.jpg"),
    "/private/a.jpg": hs.send(JPEG),
    "/no-clipcrawl/a.jpg": hs.send(JPEG),
    "/noai.jpg": hs.send(JPEG, headers=[("X-Robots-Tag", "noai")]),
    "/noml.jpg": hs.send(JPEG, headers=[("X-Robots-Tag", "clipcrawl: noml")]),
    "/noindex.jpg": hs.send(JPEG, headers=[("X-Robots-Tag", "noindex")]),
    "/tdm.jpg": hs.send(JPEG, headers=[("tdm-reservation", "1")]),
    "/429-long": hs.send(b"", status=429, content_type=None, headers=[("Retry-After", "3600")]),
    "/503-long": hs.send(b"", status=503, content_type=None,
                         headers=[("Retry-After", "Wed, 21 Oct 2099 07:28:00 GMT")]),
    "/429-always": hs.send(b"", status=429, content_type=None, headers=[("Retry-After", "0")]),
    "/429-once.jpg": hs.sequence(hs.send(b"", status=429, content_type=None, headers=[("Retry-After", "0")]),
                                 hs.send(JPEG)),
}

OK = Status.PENDING
CASES: list[tuple[str, Status, str]] = [
    ("/ok.jpg", OK, ""),
    ("/ok.png", OK, ""),
    ("/octet-stream.jpg", OK, ""),
    ("/sixteen-bit.png", OK, ""),
    ("/palette-transparent.png", OK, ""),
    ("/cmyk.jpg", OK, ""),
    ("/animated.gif", OK, ""),
    ("/animated.webp", OK, ""),
    ("/gzip.jpg", OK, ""),
    ("/brotli.jpg", OK, ""),
    ("/redirect-ok", OK, ""),
    ("/429-once.jpg", OK, ""),
    ("/bad-gzip.jpg", Status.FAILED_TO_DOWNLOAD, "content-encoding: gzip, but failed to decode"),
    ("/gzip-bomb.jpg", Status.FAILED_TO_DOWNLOAD, f"body exceeds max_bytes {CAP}"),
    ("/truncated.jpg", Status.FAILED_TO_DECODE, "truncated"),
    ("/truncated.png", Status.FAILED_TO_DECODE, ""),
    ("/corrupt.jpg", Status.FAILED_TO_DECODE, ""),
    ("/bomb.png", Status.TOO_LARGE, "900000000 pixels"),
    ("/tiny.png", Status.TOO_SMALL, "4x4"),
    ("/html-as.jpg", Status.FAILED_TO_DECODE, "not a supported image format"),
    ("/page.html", Status.FAILED_TO_DECODE, "served as text/html"),
    ("/image.svg", Status.FAILED_TO_DECODE, "SVG"),
    ("/empty.jpg", Status.FAILED_TO_DECODE, "empty body"),
    ("/403", Status.FAILED_TO_DOWNLOAD, "HTTP 403"),
    ("/404", Status.FAILED_TO_DOWNLOAD, "HTTP 404"),
    ("/500", Status.FAILED_TO_DOWNLOAD, "HTTP 500"),
    ("/length-short.jpg", Status.FAILED_TO_DECODE, "truncated"),
    ("/length-long.jpg", Status.FAILED_TO_DOWNLOAD, "IncompleteRead"),
    ("/reset-mid-body.jpg", Status.FAILED_TO_DOWNLOAD, "Connection broken"),
    ("/close-without-answer", Status.FAILED_TO_DOWNLOAD, "RemoteDisconnected"),
    ("/not-http", Status.FAILED_TO_DOWNLOAD, "BadStatusLine"),
    ("/slowloris-head", Status.FAILED_TO_DOWNLOAD, "total_timeout of 1 s exceeded"),
    ("/slowloris-body.jpg", Status.FAILED_TO_DOWNLOAD, "total_timeout of 1 s exceeded"),
    ("/stall", Status.FAILED_TO_DOWNLOAD, "ReadTimeout"),
    ("/too-big.jpg", Status.FAILED_TO_DOWNLOAD, f"exceeds max_bytes {CAP}"),
    ("/endless.jpg", Status.FAILED_TO_DOWNLOAD, f"body exceeds max_bytes {CAP}"),
    ("/loop-a", Status.FAILED_TO_DOWNLOAD, "redirect loop"),
    ("/chain/0", Status.FAILED_TO_DOWNLOAD, "more than max_redirects=3 redirects"),
    ("/redirect-other-port", Status.BLOCKED_ADDRESS, "loopback address 127.0.0.1"),
    ("/redirect-other-address", Status.BLOCKED_ADDRESS, "loopback address 127.0.0.2"),
    ("/redirect-metadata", Status.BLOCKED_ADDRESS, "cloud-metadata address 169.254.169.254"),
    ("/redirect-decimal-loopback", Status.BLOCKED_ADDRESS, "host '2130706433' resolves to loopback"),
    ("/redirect-ftp", Status.FAILED_TO_DOWNLOAD, "unsupported URL scheme 'ftp'"),
    ("/private/a.jpg", Status.DISALLOWED_ROBOTS, "disallows /private/a.jpg for user-agent 'clipcrawl'"),
    ("/no-clipcrawl/a.jpg", Status.DISALLOWED_ROBOTS, "robots.txt disallows /no-clipcrawl/a.jpg"),
    ("/noai.jpg", Status.DISALLOWED_HEADER, "X-Robots-Tag noai"),
    ("/noml.jpg", Status.DISALLOWED_HEADER, "X-Robots-Tag noml"),
    ("/noindex.jpg", Status.DISALLOWED_HEADER, "X-Robots-Tag noindex"),
    ("/tdm.jpg", Status.DISALLOWED_TDM, "tdm-reservation: 1"),
]
# Each of these makes the host back off, so each gets a fetcher of its own.
RATE_CASES: list[tuple[str, Status, str]] = [
    ("/429-long", Status.RATE_LIMITED, "HTTP 429 with Retry-After 3600 s, more than max_retry_after 1 s"),
    ("/503-long", Status.RATE_LIMITED, "HTTP 503 with Retry-After"),
    ("/429-always", Status.RATE_LIMITED, "HTTP 429 again after waiting 0 s"),
]
URL_CASES: list[tuple[str, Status, str]] = [
    ("ht!tp://bad", Status.FAILED_TO_DOWNLOAD, "unsupported URL scheme"),
    ("gopher://127.0.0.1/", Status.FAILED_TO_DOWNLOAD, "unsupported URL scheme 'gopher'"),
    ("http://[::1/x.jpg", Status.FAILED_TO_DOWNLOAD, "invalid URL"),
    ("http://0177.0.0.1/x.jpg", Status.BLOCKED_ADDRESS, "loopback address 127.0.0.1"),
    ("http://0x7f.1/x.jpg", Status.BLOCKED_ADDRESS, "loopback address 127.0.0.1"),
    ("http://[::ffff:169.254.169.254]/", Status.BLOCKED_ADDRESS, "cloud-metadata"),
]


def hostile_config(server: hs.HostileServer, **overrides: object) -> DownloadConfig:
    settings: dict[str, object] = {
        "allowed_hosts": (server.authority,), "image_size": 32, "max_bytes": CAP, "connect_timeout": 1.0,
        "read_timeout": 0.5, "total_timeout": 1.0, "max_redirects": 3, "max_retry_after": 1.0,
        "per_host_rate": 0.0, "threads": 8, **overrides,
    }
    return DownloadConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server() -> Iterator[hs.HostileServer]:
    with hs.HostileServer(ROUTES) as running:
        running.routes["/redirect-other-address"] = hs.redirect(f"http://127.0.0.2:{running.port}/ok.jpg")
        yield running


@pytest.fixture(scope="module")
def fetcher(server: hs.HostileServer) -> Iterator[Fetcher]:
    made = Fetcher(hostile_config(server))
    yield made
    made.close()


def sample(url: str, key: int = 1) -> Sample:
    return Sample(key=f"{key:013d}", shard_no=0, url=url, caption="c", page_url="http://p/", source="t")


def test_there_are_at_least_thirty_hostile_cases() -> None:
    assert len(CASES) + len(RATE_CASES) + len(URL_CASES) >= 30 and len({path for path, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("path", "status", "message_part"), CASES, ids=[path for path, _, _ in CASES])
def test_hostile_endpoint_ends_as_a_status(fetcher: Fetcher, server: hs.HostileServer, path: str, status: Status,
                                           message_part: str) -> None:
    result = download_sample(fetcher, sample(server.url(path)))
    assert result.status == status, result.error_message
    if status == OK:
        assert result.error_message is None and result.image is not None and (result.width, result.height) == (32, 32)
    else:
        assert message_part in result.error_message and result.image is None


@pytest.mark.parametrize(("url", "status", "message_part"), URL_CASES, ids=[url for url, _, _ in URL_CASES])
def test_bad_and_forbidden_urls_end_as_a_status(fetcher: Fetcher, url: str, status: Status, message_part: str) -> None:
    result = download_sample(fetcher, sample(url))
    assert (result.status, message_part in result.error_message) == (status, True), result.error_message


@pytest.mark.parametrize(("path", "status", "message_part"), RATE_CASES, ids=[path for path, _, _ in RATE_CASES])
def test_rate_limit_answers_end_as_a_status(server: hs.HostileServer, path: str, status: Status,
                                            message_part: str) -> None:
    fetcher = Fetcher(hostile_config(server))
    try:
        result = download_sample(fetcher, sample(server.url(path)))
        assert result.status == status and message_part in result.error_message, result.error_message
        if "long" in path:  # the host now backs off for an hour; its next sample fails fast, unfetched
            seen = len(server.paths())
            again = download_sample(fetcher, sample(server.url("/ok.jpg"), key=2))
            assert again.status == Status.RATE_LIMITED and len(server.paths()) == seen
    finally:
        fetcher.close()


def test_a_batch_of_every_case_finishes_with_one_row_each(server: hs.HostileServer) -> None:
    batch = [sample(server.url(path), key) for key, (path, _, _) in enumerate(CASES) ]
    results = download_batches(hostile_config(server, threads=16, per_host_connections=0), batch)
    expected = {server.url(path): status for path, status, _ in CASES}
    assert [(r.key, r.status) for r in results] == [(s.key, expected[s.url]) for s in batch]


def test_robots_txt_is_fetched_once_per_host(server: hs.HostileServer) -> None:
    fetcher = Fetcher(hostile_config(server))
    before = server.paths().count("/robots.txt")
    for path in ("/ok.jpg", "/ok.png", "/private/a.jpg"):
        download_sample(fetcher, sample(server.url(path)))
    fetcher.close()
    assert server.paths().count("/robots.txt") - before == 1
