"""One image fetch: guarded, polite, bounded in time and bytes, redirects followed by hand.

A ``Fetcher`` holds what a worker shares between its threads (the guarded session, the
per-host gate, the robots.txt and tdmrep.json caches, the deadline watchdog).
``Fetcher.fetch`` raises ``FetchError`` with the final status for every refusal it decides
itself; network errors propagate as they are and ``download.status_for`` names them.
"""

from __future__ import annotations

import collections
import dataclasses
import http.client
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

import requests
import urllib3.exceptions

from clipcrawl.transforms.address_guard import BlockedAddressError, Resolver
from clipcrawl.transforms.download_config import DownloadConfig
from clipcrawl.transforms.guarded_http import DeadlineWatchdog, DnsCache, make_guarded_session
from clipcrawl.transforms.image_processing import looks_like_image
from clipcrawl.transforms.politeness import HostGate, retry_after_seconds, robots_tag_opt_out, tdm_reserved
from clipcrawl.transforms.robots import MAX_ROBOTS_BYTES, RobotsCache, RobotsFetch
from clipcrawl.transforms.status import Status
from clipcrawl.transforms.tdmrep import MAX_TDMREP_BYTES, TdmRepCache, TdmRepRules, rules_from_fetch

_LOG = logging.getLogger(__name__)

_CHUNK_BYTES = 64 * 1024
_SNIFF_BYTES = 32
_BACK_OFF_STATUSES = frozenset({429, 503})
# What a request cut short by the deadline watchdog can raise.
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


class FetchError(Exception):
    """The response is unusable (HTTP error, cap, deadline, opt-out, politeness refusal)."""

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


def origin_of(url: str) -> str:
    """``scheme://host:port`` (validated): the unit of politeness, pools and robots.txt."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise FetchError(Status.FAILED_TO_DOWNLOAD, f"invalid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError(Status.FAILED_TO_DOWNLOAD, f"unsupported URL scheme {parts.scheme!r}")
    if not host:
        raise FetchError(Status.FAILED_TO_DOWNLOAD, "URL has no host")
    default_port = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}:{port or default_port}"


class Fetcher:
    """A worker's HTTP machinery; thread-safe, made in ``DoFn.setup``, never pickled."""

    def __init__(self, config: DownloadConfig, resolver: Resolver = socket.getaddrinfo,
                 policy_clock: Callable[[], float] = time.monotonic) -> None:
        """``policy_clock`` times the robots.txt and tdmrep.json caches (tests move it)."""
        self.config = config
        self._watchdog = DeadlineWatchdog.shared()
        dns = DnsCache(resolver, ttl=config.dns_cache_seconds) if config.dns_cache_seconds else resolver
        pool_size = config.per_host_connections or config.threads
        self.session = make_guarded_session(config.address_policy, dns, self._watchdog, config.user_agent, pool_size,
                                            ca_bundle=config.ca_bundle)
        self.gate = HostGate(config.per_host_connections, config.per_host_rate)
        self.robots = RobotsCache(self._fetch_robots, ttl=config.robots_cache_seconds, clock=policy_clock)
        self.tdmrep = TdmRepCache(self._load_tdmrep, ttl=config.robots_cache_seconds, clock=policy_clock)
        self._counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def drain_counts(self) -> dict[str, int]:
        """Events seen since the last call that no row carries (``tdmrep_invalid``, ...), for metrics."""
        with self._counts_lock:
            counts, self._counts = dict(self._counts), collections.Counter()
        return counts

    def fetch(self, url: str, facts: FetchFacts) -> bytes:
        """The body of ``url``'s final response (after redirects), or ``FetchError``."""
        started = time.monotonic()
        try:
            return self._follow(url, facts, started, self.config.user_agent_token, read_cap=self.config.max_bytes,
                                check_opt_outs=True)
        finally:
            facts.fetch_seconds = time.monotonic() - started

    def _follow(self, url: str, facts: FetchFacts, started: float, token: str, read_cap: int,
                check_opt_outs: bool) -> bytes:
        config, deadline, retried = self.config, started + self.config.total_timeout, False
        seen: set[str] = set()
        current = url
        while True:
            origin = origin_of(current)
            if check_opt_outs:
                deadline += self._check_site_policies(current, token)  # policy files have their own deadlines
            seen.add(current)
            with self.gate.slot(origin, time.monotonic() + config.max_host_wait) as waited:
                deadline += waited  # time queued for the host is not time spent fetching
                with self._watchdog.scope(deadline):
                    try:
                        outcome = self._one_request(current, facts, deadline, read_cap, check_opt_outs, origin)
                    except _NETWORK_ERRORS as exc:
                        if time.monotonic() >= deadline:  # the watchdog cut the socket
                            raise _deadline_error(config) from exc
                        raise
            if isinstance(outcome, bytes):
                return outcome
            kind, value = outcome
            if kind == "retry":
                if retried or value > config.max_retry_after or not check_opt_outs:  # robots.txt: no retry
                    raise FetchError(Status.RATE_LIMITED, _rate_limited_message(facts.http_status, value, retried,
                                                                                config))
                retried = True
                continue
            current = urllib.parse.urljoin(current, value)
            if current in seen:
                raise FetchError(Status.FAILED_TO_DOWNLOAD, f"redirect loop: {current} was already visited")
            if len(seen) > config.max_redirects:
                raise FetchError(Status.FAILED_TO_DOWNLOAD, f"more than max_redirects={config.max_redirects} redirects")

    def _one_request(self, url: str, facts: FetchFacts, deadline: float, read_cap: int, check_opt_outs: bool,
                     origin: str) -> bytes | tuple[str, object]:
        remaining = _remaining(deadline, self.config)
        response = self.session.get(
            url,
            timeout=(min(self.config.connect_timeout, remaining), min(self.config.read_timeout, remaining)),
            allow_redirects=False,
            stream=True,
        )
        with response:
            facts.final_url, facts.http_status, facts.fetch_time = url, response.status_code, time.time()
            location = self.session.get_redirect_target(response)
            if location is not None:
                return "redirect", location
            if response.status_code in _BACK_OFF_STATUSES:
                asked = retry_after_seconds(response.headers.get("Retry-After"), time.time())
                wait = self.config.default_retry_after if asked is None else asked
                self.gate.back_off(origin, wait)
                return "retry", wait
            if not 200 <= response.status_code < 300:
                raise FetchError(Status.FAILED_TO_DOWNLOAD, f"HTTP {response.status_code}")
            if check_opt_outs:
                self._check_opt_out_headers(response)
            return _read_body(response, self.config, read_cap, deadline, facts, sniff=check_opt_outs)

    def _check_site_policies(self, url: str, token: str) -> float:
        """Refuse ``url`` if robots.txt or tdmrep.json says so; returns the seconds it took to ask."""
        asked, config = time.monotonic(), self.config
        if config.respect_robots_txt:
            reason = self.robots.disallow_reason(url, token)
            if reason is not None:
                raise FetchError(Status.DISALLOWED_ROBOTS, reason)
        if config.respect_tdm_reservation and config.respect_tdmrep_json:
            reason = self.tdmrep.reservation_reason(url)
            if reason is not None:
                raise FetchError(Status.DISALLOWED_TDM, reason)
        return time.monotonic() - asked

    def _check_opt_out_headers(self, response: requests.Response) -> None:
        headers = response.raw.headers
        if self.config.respect_x_robots_tag:
            directive = robots_tag_opt_out(headers.getlist("X-Robots-Tag"), self.config.user_agent_token)
            if directive is not None:
                raise FetchError(Status.DISALLOWED_HEADER, f"X-Robots-Tag {directive} opts out of dataset use")
        if self.config.respect_tdm_reservation and tdm_reserved(headers.getlist("tdm-reservation")):
            raise FetchError(Status.DISALLOWED_TDM, "TDM-Rep tdm-reservation: 1 reserves text and data mining rights")

    def _fetch_robots(self, robots_url: str) -> RobotsFetch:
        return self._fetch_policy_file(robots_url, MAX_ROBOTS_BYTES)

    def _load_tdmrep(self, tdmrep_url: str) -> TdmRepRules:
        rules = rules_from_fetch(tdmrep_url, self._fetch_policy_file(tdmrep_url, MAX_TDMREP_BYTES))
        if rules.problem_kind is not None:
            with self._counts_lock:
                self._counts[f"tdmrep_{rules.problem_kind}"] += 1
            _LOG.warning("%s %s: no reservation taken from it", tdmrep_url, rules.problem)
        return rules

    def _fetch_policy_file(self, url: str, read_cap: int) -> RobotsFetch:
        """robots.txt or tdmrep.json through the same guard and gate; any failure is data for the caller's rules."""
        facts = FetchFacts()
        try:
            body = self._follow(url, facts, time.monotonic(), self.config.user_agent_token,
                                read_cap=read_cap, check_opt_outs=False)
        except BlockedAddressError:
            raise  # the guard's verdict names the real reason; nothing is cached
        except FetchError as exc:
            if facts.http_status is not None and not 200 <= facts.http_status < 300:
                return RobotsFetch(status=facts.http_status)
            return RobotsFetch(error=str(exc))
        except Exception as exc:  # noqa: BLE001 - unreachable in any way is an answer (robots.txt: "disallow")
            return RobotsFetch(error=f"{type(exc).__name__}: {exc}")
        return RobotsFetch(status=facts.http_status, body=body)


def _remaining(deadline: float, config: DownloadConfig) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _deadline_error(config)
    return remaining


def _deadline_error(config: DownloadConfig) -> FetchError:
    return FetchError(Status.FAILED_TO_DOWNLOAD, f"total_timeout of {config.total_timeout:g} s exceeded")


def _rate_limited_message(http_status: int | None, wait: float, retried: bool, config: DownloadConfig) -> str:
    if retried:
        return f"HTTP {http_status} again after waiting {wait:.0f} s as asked"
    return f"HTTP {http_status} with Retry-After {wait:.0f} s, more than max_retry_after {config.max_retry_after:g} s"


def _read_body(response: requests.Response, config: DownloadConfig, cap: int, deadline: float, facts: FetchFacts,
               sniff: bool) -> bytes:
    """Stream the (decoded) body under the byte cap and the total deadline.

    The cap counts decoded bytes, so a gzip bomb stops at the cap too. A body served as
    something other than an image is given up after its first bytes unless they look
    like an image (some servers label every file application/octet-stream).
    """
    declared = response.headers.get("Content-Length", "")
    encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    if declared.isdigit() and int(declared) > cap and not encoded:
        raise FetchError(Status.FAILED_TO_DOWNLOAD, f"Content-Length {declared} exceeds max_bytes {cap}")
    content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    must_sniff = sniff and not content_type.startswith("image/")
    read = getattr(response.raw, "read1", None) or response.raw.read  # read1: urllib3 >= 2.3
    chunks: list[bytes] = []
    size = 0
    while True:
        _remaining(deadline, config)
        chunk = read(min(_CHUNK_BYTES, cap + 1 - size), decode_content=True)
        size += len(chunk)
        facts.downloaded_bytes = size
        if size > cap:
            raise FetchError(Status.FAILED_TO_DOWNLOAD, f"body exceeds max_bytes {cap}")
        chunks.append(chunk)
        if must_sniff and (size >= _SNIFF_BYTES or not chunk):
            head = b"".join(chunks)
            if not looks_like_image(head):
                raise FetchError(Status.FAILED_TO_DECODE,
                                 f"served as {content_type or 'no Content-Type'} and starts {head[:16]!r}: not an image")
            must_sniff = False
        if not chunk:
            return b"".join(chunks)
