"""robots.txt: fetched once per origin, cached per worker, evaluated for our User-Agent token.

Parsed with Protego (Scrapy's parser) rather than the stdlib's ``urllib.robotparser``: the
stdlib applies the first matching rule instead of the longest (RFC 9309 section 2.2.2),
and ignores ``*`` and ``$`` wildcards, so ``Disallow: /*.jpg$`` would not stop us.

Fetch outcomes follow RFC 9309 section 2.3.1: a 2xx body is parsed; a 4xx ("unavailable")
means no rules, so everything is allowed; a 5xx, a 429 or an unreachable host means the
origin is treated as fully disallowed. The outcome is cached for the worker's lifetime,
so a broken robots.txt costs one request per origin, not one per image.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import urllib.parse
from collections.abc import Callable

from protego import Protego

# RFC 9309: parsers must handle at least 500 KiB; rules past that may be ignored.
MAX_ROBOTS_BYTES = 500 * 1024


@dataclasses.dataclass(frozen=True)
class RobotsFetch:
    """What fetching /robots.txt gave: an HTTP status and body, or an error description."""

    status: int | None = None
    body: bytes = b""
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class RobotsRules:
    """The rules of one origin; ``blanket`` is set when the whole origin is allowed or refused."""

    robots_url: str
    parser: Protego | None = None
    blanket: bool | None = None  # True: allow all; False: disallow all; None: ask the parser
    reason: str = ""

    def disallow_reason(self, url: str, user_agent_token: str) -> str | None:
        """Why ``url`` may not be fetched by ``user_agent_token``, or None when it may."""
        if self.blanket is True:
            return None
        if self.blanket is False:
            return f"{self.robots_url} {self.reason}: the whole host is treated as disallowed"
        assert self.parser is not None
        if self.parser.can_fetch(url, user_agent_token):
            return None
        path = urllib.parse.urlsplit(url).path or "/"
        return f"{self.robots_url} disallows {path} for user-agent {user_agent_token!r}"


def robots_url_for(url: str) -> str:
    """The robots.txt URL governing ``url``: same scheme, host and port (RFC 9309 2.3)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "/robots.txt", "", ""))


def rules_from_fetch(robots_url: str, fetched: RobotsFetch) -> RobotsRules:
    """The RFC 9309 reading of a robots.txt fetch outcome."""
    if fetched.error is not None:
        return RobotsRules(robots_url, blanket=False, reason=f"unreachable ({fetched.error})")
    status = fetched.status or 0
    if 200 <= status < 300:
        text = fetched.body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
        return RobotsRules(robots_url, parser=Protego.parse(text))
    if status == 429 or status >= 500:
        return RobotsRules(robots_url, blanket=False, reason=f"answered HTTP {status}")
    return RobotsRules(robots_url, blanket=True, reason=f"answered HTTP {status}: no rules")


class RobotsCache:
    """One fetch per origin per worker, even when many threads ask at once.

    ``fetch`` does the HTTP work (through the guarded, polite session) and never raises;
    it returns a ``RobotsFetch``. Bounded: the least recently used origins are forgotten.
    """

    def __init__(self, fetch: Callable[[str], RobotsFetch], size: int = 10_000) -> None:
        self._fetch, self._size = fetch, size
        self._rules: collections.OrderedDict[str, RobotsRules] = collections.OrderedDict()
        self._origin_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def rules_for(self, url: str) -> RobotsRules:
        robots_url = robots_url_for(url)
        with self._lock:
            cached = self._rules.get(robots_url)
            if cached is not None:
                self._rules.move_to_end(robots_url)
                return cached
            origin_lock = self._origin_locks.setdefault(robots_url, threading.Lock())
        with origin_lock:  # threads for the same origin wait for the one fetch
            with self._lock:
                cached = self._rules.get(robots_url)
            if cached is None:
                cached = rules_from_fetch(robots_url, self._fetch(robots_url))
                with self._lock:
                    self._rules[robots_url] = cached
                    while len(self._rules) > self._size:
                        self._rules.popitem(last=False)
                    self._origin_locks.pop(robots_url, None)
        return cached

    def disallow_reason(self, url: str, user_agent_token: str) -> str | None:
        return self.rules_for(url).disallow_reason(url, user_agent_token)
