"""DownloadImages: fetch each pending candidate's image, politely and safely, and resize it.

Per-record logic is plain functions (``fetch``, ``download_sample``) testable without Beam;
``status_for`` is the one place an exception becomes a row status. The DoFn only owns the
HTTP session and the thread pool that overlaps the network waits of a batch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import http.cookiejar
import socket
import time
import urllib.parse
from collections.abc import Iterable, Iterator

import apache_beam as beam
import requests
import requests.adapters
import urllib3.exceptions

from clipcrawl.transforms.address_guard import BlockedAddressError, Resolver, check_host
from clipcrawl.transforms.image_processing import ImageError, ImageSpec, process_image
from clipcrawl.transforms.metrics import DOWNLOAD, StageCounters
from clipcrawl.transforms.routing import OnPending
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status

DEFAULT_USER_AGENT = "clipcrawl/0.1 (image-text dataset builder; +https://github.com/clipcrawl/clipcrawl)"

_CHUNK_BYTES = 64 * 1024
_AI_OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai"})
# Directives that are "name: value" rather than "user-agent: directive".
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
# An opt-out addressed to img2dataset is addressed to dataset builders like this one.
_ALSO_ADDRESSED_TO = frozenset({"img2dataset"})


@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    """Everything the download stage needs, as plain picklable values."""

    image_size: int = 256
    resize_mode: str = "border"
    resize_only_if_bigger: bool = False
    encode_format: str = "jpg"
    encode_quality: int = 95
    min_image_size: int = 10
    max_image_pixels: int = 89_478_485
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_redirects: int = 5
    threads: int = 16
    user_agent: str = DEFAULT_USER_AGENT
    allow_private_addresses: bool = False
    respect_x_robots_tag: bool = True

    def __post_init__(self) -> None:
        _ = self.image_spec  # validates the image fields, with their own messages
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {self.max_bytes}")
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {self.max_redirects}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if not self.user_agent.strip() or any(c in self.user_agent for c in "\r\n"):
            raise ValueError(f"user_agent must be a non-empty single line, got {self.user_agent!r}")

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec(
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format,
            encode_quality=self.encode_quality,
            min_image_size=self.min_image_size,
            max_image_pixels=self.max_image_pixels,
        )

    @property
    def user_agent_token(self) -> str:
        """The product token X-Robots-Tag lines address us by: ``clipcrawl``."""
        words = self.user_agent.split("/", 1)[0].split()
        return words[0].lower() if words else ""


class FetchError(Exception):
    """The response is unusable (HTTP error, size cap, deadline, opt-out header)."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class FetchFacts:
    """What is known about a fetch so far; filled as it goes so failed rows keep it too."""

    final_url: str | None = None
    http_status: int | None = None
    fetch_time: float | None = None  # unix seconds when the last response arrived
    fetch_seconds: float | None = None  # first request to body read (or to the failure)
    downloaded_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """The body of the final response and the facts of the whole fetch."""

    body: bytes = dataclasses.field(repr=False)
    facts: FetchFacts


def fetch(
    session: requests.Session,
    url: str,
    config: DownloadConfig,
    resolver: Resolver = socket.getaddrinfo,
    facts: FetchFacts | None = None,
) -> FetchResult:
    """GET ``url``, following redirects by hand so the address guard sees every hop."""
    facts = facts if facts is not None else FetchFacts()
    started = time.monotonic()
    deadline = started + config.total_timeout
    try:
        current = url
        for _ in range(config.max_redirects + 1):
            _check_url(current, config, resolver)
            remaining = _remaining(deadline, config)
            response = session.get(
                current,
                headers={"User-Agent": config.user_agent},
                timeout=(min(config.connect_timeout, remaining), min(config.read_timeout, remaining)),
                allow_redirects=False,
                stream=True,
            )
            with response:
                facts.final_url, facts.http_status, facts.fetch_time = response.url, response.status_code, time.time()
                location = session.get_redirect_target(response)
                if location is not None:
                    current = urllib.parse.urljoin(response.url, location)
                    continue
                if not 200 <= response.status_code < 300:
                    raise FetchError(Status.FAILED_TO_DOWNLOAD, f"HTTP {response.status_code}")
                if config.respect_x_robots_tag and robots_tag_disallows(
                    response.raw.headers.getlist("X-Robots-Tag"), config.user_agent_token
                ):
                    raise FetchError(Status.DISALLOWED_HEADER, "X-Robots-Tag opts out of AI use")
                return FetchResult(body=_read_body(response, config, deadline, facts), facts=facts)
        raise FetchError(Status.FAILED_TO_DOWNLOAD, f"more than max_redirects={config.max_redirects} redirects")
    finally:
        facts.fetch_seconds = time.monotonic() - started


def _check_url(url: str, config: DownloadConfig, resolver: Resolver) -> None:
    """Only http(s) URLs with a host, and (unless allowed) only to public addresses."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise FetchError(Status.FAILED_TO_DOWNLOAD, f"invalid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError(Status.FAILED_TO_DOWNLOAD, f"unsupported URL scheme {parts.scheme!r}")
    if not host:
        raise FetchError(Status.FAILED_TO_DOWNLOAD, "URL has no host")
    check_host(host, config.allow_private_addresses, resolver)


def _remaining(deadline: float, config: DownloadConfig) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(Status.FAILED_TO_DOWNLOAD, f"total_timeout of {config.total_timeout:g} s exceeded")
    return remaining


def _read_body(response: requests.Response, config: DownloadConfig, deadline: float, facts: FetchFacts) -> bytes:
    """Stream the body under the byte cap and the total deadline.

    ``read1`` returns whatever has arrived, so a server dripping bytes cannot hold a read
    past the deadline by more than one read timeout.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > config.max_bytes:
        raise FetchError(
            Status.FAILED_TO_DOWNLOAD, f"Content-Length {declared} exceeds max_bytes {config.max_bytes}"
        )
    read = getattr(response.raw, "read1", None) or response.raw.read  # read1: urllib3 >= 2.3
    chunks: list[bytes] = []
    size = 0
    while True:
        _remaining(deadline, config)
        chunk = read(min(_CHUNK_BYTES, config.max_bytes + 1 - size), decode_content=True)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        facts.downloaded_bytes = size
        if size > config.max_bytes:
            raise FetchError(Status.FAILED_TO_DOWNLOAD, f"body exceeds max_bytes {config.max_bytes}")
        chunks.append(chunk)


def robots_tag_disallows(values: Iterable[str], user_agent_token: str) -> bool:
    """True if an X-Robots-Tag line says noai/noimageai to everyone or to this crawler.

    Lines look like ``noai, noimageai`` or ``clipcrawl: noai``; a ``name:`` prefix
    addresses the directives after it to one crawler.
    """
    addressed = {user_agent_token.lower(), *_ALSO_ADDRESSED_TO}
    for value in values:
        target: str | None = None
        for token in value.split(","):
            directive = token.strip().lower()
            name, colon, rest = directive.partition(":")
            if colon and name.strip() not in _VALUED_DIRECTIVES:
                target, directive = name.strip(), rest.strip()
            if directive in _AI_OPT_OUT_DIRECTIVES and (target is None or target in addressed):
                return True
    return False


# Exceptions a bad URL or a bad response can raise; anything else is a bug and propagates.
_EXPECTED_ERRORS = (
    FetchError,
    BlockedAddressError,
    ImageError,
    requests.RequestException,
    urllib3.exceptions.HTTPError,  # raised by raw reads, which requests does not wrap
    http.client.HTTPException,
    OSError,  # DNS failures from the address guard, socket errors
)


def status_for(exc: BaseException) -> tuple[Status, str]:
    """The one place an exception becomes a row's status and error message."""
    if isinstance(exc, (FetchError, ImageError)):
        return exc.status, str(exc)
    if isinstance(exc, BlockedAddressError):
        return Status.BLOCKED_ADDRESS, str(exc)
    return Status.FAILED_TO_DOWNLOAD, f"{type(exc).__name__}: {exc}"


def download_sample(
    session: requests.Session, sample: Sample, config: DownloadConfig, resolver: Resolver = socket.getaddrinfo
) -> Sample:
    """The sample with its stored image (still pending: scoring decides), or rejected."""
    facts = FetchFacts()
    try:
        fetched = fetch(session, sample.url, config, resolver, facts)
        image = process_image(fetched.body, config.image_spec)
    except _EXPECTED_ERRORS as exc:
        status, message = status_for(exc)
        return dataclasses.replace(sample, **dataclasses.asdict(facts)).reject(status, message)
    return dataclasses.replace(
        sample,
        **dataclasses.asdict(facts),
        image=image.data,
        image_format=image.format,
        width=image.width,
        height=image.height,
        original_width=image.original_width,
        original_height=image.original_height,
        sha256=image.sha256,
    )


def make_session(config: DownloadConfig) -> requests.Session:
    """A session whose pool fits the thread count and which keeps no state between samples.

    Environment proxies and .netrc are ignored so every worker behaves alike, and cookies
    are refused so one site's cookies never travel with another sample's request.
    """
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.headers["User-Agent"] = config.user_agent
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=config.threads, pool_maxsize=config.threads, max_retries=0
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _DownloadBatchFn(beam.DoFn):
    """Downloads a batch of pending samples on a thread pool; counts in the bundle thread."""

    def __init__(self, config: DownloadConfig) -> None:
        self._config = config

    def setup(self) -> None:
        self._session = make_session(self._config)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._config.threads, thread_name_prefix="clipcrawl-download"
        )
        self._counters = StageCounters(DOWNLOAD)

    def process(self, batch: list[Sample]) -> Iterator[Sample]:
        # Beam metrics only count in the thread running the bundle, so count here.
        for result in self._executor.map(lambda s: download_sample(self._session, s, self._config), batch):
            self._counters.total.inc()
            if result.pending:
                self._counters.forwarded.inc()
            else:
                self._counters.drop(result.status)
            yield result

    def teardown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._session.close()


class DownloadImages(beam.PTransform):
    """Pending samples get their image (or a rejection); all others pass through untouched."""

    def __init__(self, config: DownloadConfig | None = None) -> None:
        super().__init__()
        self._config = config or DownloadConfig()

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        batch = beam.BatchElements(min_batch_size=1, max_batch_size=self._config.threads * 4)
        download = beam.ParDo(_DownloadBatchFn(self._config))
        return samples | "OnPending" >> OnPending("Batch" >> batch | "Download" >> download)
