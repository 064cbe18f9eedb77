"""The download stage against a loopback ImageServer: only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
from collections.abc import Iterator

import apache_beam as beam
import pytest
import requests
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from clipcrawl.pipelines.image_server import ImageServer, Route
from clipcrawl.transforms import metrics
from clipcrawl.transforms.address_guard import BlockedAddressError
from clipcrawl.transforms.download import (
    DownloadConfig,
    DownloadImages,
    Fetcher,
    FetchError,
    download_sample,
    interleave_by_host,
    status_for,
)
from clipcrawl.transforms.politeness import HostBusyError, robots_tag_opt_out
from clipcrawl.transforms.image_processing import ImageError
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status
from tests.conftest import download_batches

# Loopback tests must opt in to private addresses; small timeouts keep failures fast; no
# per-host rate limit so the suite stays quick (the limits have tests of their own).
LOCAL = DownloadConfig(
    allow_private_addresses=True, image_size=64, connect_timeout=2.0, read_timeout=2.0, total_timeout=5.0, threads=4,
    per_host_rate=0,
)


def jpeg(width: int = 300, height: int = 200) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


IMAGE = jpeg()


def sample(url: str, key: str = "0000000000001", **fields: object) -> Sample:
    return Sample(
        key=key, shard_no=0, url=url, caption="a red square", page_url="http://page.example/", source="t.wat", **fields
    )


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer({"/img.jpg": Route(body=IMAGE)}) as running:
        yield running


def fetched(url: str, config: DownloadConfig = LOCAL, resolver: object = socket.getaddrinfo) -> Sample:
    fetcher = Fetcher(config, resolver=resolver)  # type: ignore[arg-type]
    try:
        return download_sample(fetcher, sample(url))
    finally:
        fetcher.close()


SITE_POLICIES = ("/robots.txt", "/.well-known/tdmrep.json")  # each fetched once per origin before its first image


def image_requests(server: ImageServer) -> list[str]:
    """Requested paths other than the site policy files."""
    return [path for path in server.requested if path not in SITE_POLICIES]


def test_good_image_is_stored_and_stays_pending(server: ImageServer) -> None:
    result = fetched(server.url("/img.jpg"), LOCAL)
    assert result.status == Status.PENDING and result.error_message is None
    assert (result.width, result.height, result.original_width, result.original_height) == (64, 64, 300, 200)
    assert result.image_format == "jpg" and result.image[:2] == b"\xff\xd8"
    assert result.sha256 == hashlib.sha256(result.image).hexdigest()
    assert (result.http_status, result.final_url, result.downloaded_bytes) == (200, server.url("/img.jpg"), len(IMAGE))
    assert result.fetch_time is not None and result.fetch_seconds is not None and result.fetch_seconds >= 0
    assert server.requested == [*SITE_POLICIES, "/img.jpg"]
    assert all(seen.headers["User-Agent"] == LOCAL.user_agent for seen in server.seen)


def test_default_config_refuses_the_loopback_server(server: ImageServer) -> None:
    result = fetched(server.url("/img.jpg"), DownloadConfig())
    assert result.status == Status.BLOCKED_ADDRESS
    assert result.error_message == "host '127.0.0.1' resolves to loopback address 127.0.0.1"
    assert server.requested == []  # refused before connecting, robots.txt included


@pytest.mark.parametrize("code", [404, 500])
def test_http_errors_fail_to_download(server: ImageServer, code: int) -> None:
    server.add("/error", Route(status=code, body=b"nope", content_type="text/plain"))
    result = fetched(server.url("/error"), LOCAL)
    assert (result.status, result.error_message) == (Status.FAILED_TO_DOWNLOAD, f"HTTP {code}")
    assert (result.http_status, result.final_url) == (code, server.url("/error"))
    assert result.image is None


def test_html_served_as_an_image_fails_to_decode(server: ImageServer) -> None:
    page = b"<html><body>Sorry, hotlinking is not allowed</body></html>"
    server.add("/fake.jpg", Route(body=page, content_type="image/jpeg"))
    result = fetched(server.url("/fake.jpg"), LOCAL)
    assert result.status == Status.FAILED_TO_DECODE
    assert (result.http_status, result.downloaded_bytes) == (200, len(page))


def test_declared_oversized_body_fails_before_reading(server: ImageServer) -> None:
    server.add("/big.jpg", Route(body=IMAGE))
    config = dataclasses.replace(LOCAL, max_bytes=1000)
    result = fetched(server.url("/big.jpg"), config)
    assert result.status == Status.FAILED_TO_DOWNLOAD
    assert result.error_message == f"Content-Length {len(IMAGE)} exceeds max_bytes 1000"
    assert result.downloaded_bytes is None


def test_undeclared_oversized_body_is_cut_at_the_cap(server: ImageServer) -> None:
    server.add("/stream.jpg", Route(body=b"\xff" * 500_000, send_content_length=False))
    config = dataclasses.replace(LOCAL, max_bytes=1000)
    result = fetched(server.url("/stream.jpg"), config)
    assert (result.status, result.error_message) == (Status.FAILED_TO_DOWNLOAD, "body exceeds max_bytes 1000")
    assert result.downloaded_bytes == 1001  # one byte over the cap proves it, no more is read


def test_body_without_content_length_is_read_to_the_end(server: ImageServer) -> None:
    server.add("/plain.jpg", Route(body=IMAGE, send_content_length=False))
    result = fetched(server.url("/plain.jpg"), LOCAL)
    assert result.status == Status.PENDING and result.downloaded_bytes == len(IMAGE)


def test_slow_response_hits_the_read_timeout(server: ImageServer) -> None:
    server.add("/slow.jpg", Route(body=IMAGE, delay_seconds=1.5))
    config = dataclasses.replace(LOCAL, read_timeout=0.3)
    result = fetched(server.url("/slow.jpg"), config)
    assert result.status == Status.FAILED_TO_DOWNLOAD
    assert result.error_message.startswith("ReadTimeout: ")


def test_dripping_body_hits_the_total_deadline(server: ImageServer) -> None:
    # One byte every 20 ms never trips the read timeout; only the total deadline stops it.
    server.add("/drip.jpg", Route(body=IMAGE, drip_seconds=0.02))
    config = dataclasses.replace(LOCAL, read_timeout=0.5, total_timeout=0.5)
    result = fetched(server.url("/drip.jpg"), config)
    assert (result.status, result.error_message) == (Status.FAILED_TO_DOWNLOAD, "total_timeout of 0.5 s exceeded")
    assert result.http_status == 200 and 0 < result.downloaded_bytes < len(IMAGE)


def test_redirect_chain_reaches_the_image(server: ImageServer) -> None:
    server.add("/r1", Route(redirect_to="/r2"))  # relative Location
    server.add("/r2", Route(status=301, redirect_to=server.url("/img.jpg")))  # absolute
    result = fetched(server.url("/r1"), LOCAL)
    assert result.status == Status.PENDING
    assert (result.http_status, result.final_url) == (200, server.url("/img.jpg"))
    assert image_requests(server) == ["/r1", "/r2", "/img.jpg"]


def test_too_many_redirects_fail(server: ImageServer) -> None:
    for hop in range(10):
        server.add(f"/chain/{hop}", Route(redirect_to=f"/chain/{hop + 1}"))
    config = dataclasses.replace(LOCAL, max_redirects=3)
    result = fetched(server.url("/chain/0"), config)
    assert (result.status, result.error_message) == (Status.FAILED_TO_DOWNLOAD, "more than max_redirects=3 redirects")
    assert result.http_status == 302 and image_requests(server) == [f"/chain/{hop}" for hop in range(4)]


def test_redirect_loop_is_named(server: ImageServer) -> None:
    server.add("/a", Route(redirect_to="/b"))
    server.add("/b", Route(redirect_to="/a"))
    result = fetched(server.url("/a"), LOCAL)
    assert (result.status, result.error_message) == (
        Status.FAILED_TO_DOWNLOAD, f"redirect loop: {server.url('/a')} was already visited"
    )
    assert image_requests(server) == ["/a", "/b"]


def test_every_redirect_hop_is_checked_by_the_guard(server: ImageServer) -> None:
    """Only this server is allowed; its redirect to another loopback address is refused."""
    server.add("/hop", Route(redirect_to=f"http://127.0.0.2:{server.port}/img.jpg"))
    config = dataclasses.replace(LOCAL, allow_private_addresses=False, allowed_hosts=(f"127.0.0.1:{server.port}",))
    result = fetched(server.url("/hop"), config)
    assert result.status == Status.BLOCKED_ADDRESS
    assert result.error_message == "host '127.0.0.2' resolves to loopback address 127.0.0.2"
    assert result.http_status == 302 and image_requests(server) == ["/hop"]


def test_the_address_connected_to_is_the_address_checked(server: ImageServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the stub answers an allowed address first and a forbidden one after.

    Only 127.0.0.1:<port> is allowed. A guard that checked one lookup and let the HTTP
    client resolve again would connect to the second answer; here each connection
    resolves once and connects to exactly what it checked, with the name kept in Host.
    """
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    lookups: list[str] = []

    def rebinding(host: str, port: object) -> list[tuple]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    connected: list[str] = []
    real_connect = socket.socket.connect

    def recording_connect(sock: socket.socket, address: object) -> None:
        connected.append(address[0])  # type: ignore[index]
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    config = dataclasses.replace(LOCAL, allow_private_addresses=False, allowed_hosts=(f"127.0.0.1:{server.port}",),
                                 dns_cache_seconds=0, respect_robots_txt=False, respect_tdmrep_json=False)
    url = f"http://rebind.example:{server.port}/img.jpg"
    first = fetched(url, config, resolver=rebinding)
    assert first.status == Status.PENDING
    assert (lookups, connected) == (["rebind.example"], ["127.0.0.1"])
    assert server.seen[0].headers["Host"] == f"rebind.example:{server.port}"

    second = fetched(url, config, resolver=rebinding)  # a new connection: resolved and checked again
    assert second.status == Status.BLOCKED_ADDRESS
    assert second.error_message == "host 'rebind.example' resolves to loopback address 127.0.0.2"
    assert connected == ["127.0.0.1"] and len(server.seen) == 1


def test_dns_failure_is_a_download_failure() -> None:
    def resolver(host: str, port: object) -> list[tuple]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    config = dataclasses.replace(LOCAL, allow_private_addresses=False, respect_robots_txt=False)
    result = fetched("http://no-such-host.invalid/a.jpg", config, resolver=resolver)
    assert result.status == Status.FAILED_TO_DOWNLOAD
    assert result.error_message.startswith("ConnectionError: ")
    assert "Failed to resolve 'no-such-host.invalid'" in result.error_message


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Robots-Tag": "noai"}, Status.DISALLOWED_HEADER),
        ({"X-Robots-Tag": "noindex, NoImageAI"}, Status.DISALLOWED_HEADER),
        ({"X-Robots-Tag": "clipcrawl: noai"}, Status.DISALLOWED_HEADER),
        ([("X-Robots-Tag", "googlebot: noindex"), ("X-Robots-Tag", "noai")], Status.DISALLOWED_HEADER),
        ({"X-Robots-Tag": "otherbot: noai"}, Status.PENDING),
        ({"X-Robots-Tag": "noindex, nofollow"}, Status.DISALLOWED_HEADER),
        ({"X-Robots-Tag": "noml"}, Status.DISALLOWED_HEADER),
        ({"X-Robots-Tag": "nofollow, noarchive"}, Status.PENDING),
        ({"tdm-reservation": "1"}, Status.DISALLOWED_TDM),
        ({"tdm-reservation": "0"}, Status.PENDING),
    ],
)
def test_x_robots_tag_opt_out(server: ImageServer, headers: object, status: Status) -> None:
    server.add("/tagged.jpg", Route(body=IMAGE, headers=headers))
    result = fetched(server.url("/tagged.jpg"), LOCAL)
    assert result.status == status
    if status != Status.PENDING:
        assert result.http_status == 200 and result.image is None


def test_x_robots_tag_can_be_ignored_when_configured(server: ImageServer) -> None:
    server.add("/tagged.jpg", Route(body=IMAGE, headers={"X-Robots-Tag": "noai"}))
    config = dataclasses.replace(LOCAL, respect_x_robots_tag=False)
    assert fetched(server.url("/tagged.jpg"), config).status == Status.PENDING


@pytest.mark.parametrize(
    ("values", "disallowed"),
    [
        (["noai"], True),
        (["NOIMAGEAI"], True),
        (["clipcrawl: noai, noindex"], True),
        (["img2dataset: noimageai"], True),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST, noai"], True),
        (["otherbot: noai"], False),
        (["otherbot: noindex, clipcrawl: noai"], True),
        (["clipcrawl: nofollow, otherbot: noai"], False),
        (["clipcrawl: noindex, otherbot: noai"], True),
        (["noindex", "nofollow"], True),
        (["googlebot: noindex"], False),
        (["NoML"], True),
        (["none"], True),
        (["nofollow", "noarchive"], False),
        (["noaix"], False),
        ([], False),
    ],
)
def test_robots_tag_parsing(values: list[str], disallowed: bool) -> None:
    assert (robots_tag_opt_out(values, "clipcrawl") is not None) is disallowed


@pytest.mark.parametrize(
    ("url", "message_start"),
    [
        ("ftp://127.0.0.1/a.jpg", "unsupported URL scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported URL scheme 'file'"),
        ("not a url", "unsupported URL scheme ''"),
        ("http://", "URL has no host"),
        ("http://[::1/a.jpg", "invalid URL"),
        ("http://127.0.0.1:1/closed.jpg", "ConnectionError: "),  # nothing listens on port 1
    ],
)
def test_bad_urls_become_rows_not_exceptions(url: str, message_start: str) -> None:
    result = fetched(url, dataclasses.replace(LOCAL, respect_robots_txt=False))
    assert result.status == Status.FAILED_TO_DOWNLOAD
    assert result.error_message.startswith(message_start)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FetchError(Status.DISALLOWED_HEADER, "opt out"), (Status.DISALLOWED_HEADER, "opt out")),
        (ImageError(Status.TOO_SMALL, "5x5"), (Status.TOO_SMALL, "5x5")),
        (
            BlockedAddressError("h", "10.0.0.1"),
            (Status.BLOCKED_ADDRESS, "host 'h' resolves to non-public address 10.0.0.1"),
        ),
        (requests.ConnectTimeout("took too long"), (Status.FAILED_TO_DOWNLOAD, "ConnectTimeout: took too long")),
        (HostBusyError("host h busy"), (Status.RATE_LIMITED, "host h busy")),
    ],
)
def test_status_for_maps_each_exception_family(exc: Exception, expected: tuple[Status, str]) -> None:
    assert status_for(exc) == expected


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"read_timeout": -1}, "read_timeout"),
        ({"total_timeout": 0}, "total_timeout"),
        ({"max_redirects": -1}, "max_redirects"),
        ({"threads": 0}, "threads"),
        ({"user_agent": "bot\r\nX-Evil: 1"}, "user_agent"),
        ({"resize_mode": "stretch"}, "resize_mode"),
        ({"encode_format": "png"}, "encode_quality for png"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_config_validation(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DownloadConfig(**overrides)


def test_batch_fn_downloads_concurrently_and_in_order(server: ImageServer) -> None:
    server.add("/slow.jpg", Route(body=IMAGE, delay_seconds=0.3))
    batch = [sample(server.url("/slow.jpg"), key=f"{i:013d}") for i in range(4)]
    results = download_batches(LOCAL, batch)
    assert [r.key for r in results] == [s.key for s in batch]
    assert all(r.status == Status.PENDING for r in results)
    assert server.max_in_flight > 1


def test_download_images_in_a_pipeline(server: ImageServer) -> None:
    good = sample(server.url("/img.jpg"), key="0000000000001")
    missing = sample(server.url("/missing.jpg"), key="0000000000002")
    settled = sample(server.url("/img.jpg"), key="0000000000003").reject(Status.FILTERED_TEXT, "caption too short")

    pipeline = TestPipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    output = pipeline | beam.Create([good, missing, settled]) | DownloadImages(LOCAL)
    assert_that(
        output | "Summarise" >> beam.Map(lambda s: (s.key, s.status, s.width)),
        equal_to(
            [(good.key, "pending", 64), (missing.key, "failed_to_download", None), (settled.key, "filtered_text", None)]
        ),
        label="CheckStatuses",
    )
    assert_that(
        output | "KeepSettled" >> beam.Filter(lambda s: s.key == settled.key),
        equal_to([settled]),
        label="CheckSettledUntouched",
    )
    result = pipeline.run()
    result.wait_until_finish()

    query = MetricsFilter().with_namespace(metrics.namespace(metrics.DOWNLOAD))
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(query)["counters"]}
    assert counters == {
        metrics.TOTAL: 2,
        metrics.FORWARDED: 1,
        metrics.DROPPED: 1,
        metrics.dropped_name(Status.FAILED_TO_DOWNLOAD): 1,
    }
    assert server.requested.count("/img.jpg") == 1  # the settled row was not fetched


def test_a_sample_that_already_has_its_image_passes_through_unfetched(server: ImageServer) -> None:
    """Re-scoring existing tars: the image is there, the sample is pending, nothing is fetched."""
    carried = sample(server.url("/img.jpg"), image=b"stored bytes", image_format="jpg", width=8, height=8)
    results = download_batches(LOCAL, [carried])
    assert results == [carried]
    assert server.requested == []


def test_interleave_by_host_takes_one_per_host_in_turn() -> None:
    urls = ["http://a/1", "http://a/2", "http://a/3", "http://b/1", "not a url", "http://b/2"]
    assert interleave_by_host([sample(url) for url in urls]) == [0, 3, 4, 1, 5, 2]
