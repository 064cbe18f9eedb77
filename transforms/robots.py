"""robots.txt: fetched once per origin, cached per worker for a day, evaluated for our User-Agent token.

Parsed with Protego (Scrapy's parser) rather than the stdlib's ``urllib.robotparser``: the
stdlib applies the first matching rule instead of the longest (RFC 9309 section 2.2.2),
and ignores ``*`` and ``$`` wildcards, so ``Disallow: /*.jpg$`` would not stop us.

Fetch outcomes follow RFC 9309 section 2.3.1: a 2xx body is parsed; a 4xx ("unavailable")
means no rules, so everything is allowed; a 5xx, a 429 or an unreachable host means the
origin is treated as fully disallowed. The outcome is cached (24 h by default, the most
RFC 9309 section 2.4 allows), so a broken robots.txt costs one request per origin per day,
not one per image, and a changed one is followed within a day.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from collections.abc import Callable

from protego import Protego

from clipcrawl.transforms.origin_cache import DEFAULT_TTL_SECONDS, OriginCache

# RFC 9309: parsers must handle at least 500 KiB; rules past that may be ignored.
MAX_ROBOTS_BYTES = 500 * 1024


@dataclasses.dataclass(frozen=True)
class RobotsFetch:
    """What fetching a policy file (/robots.txt, tdmrep.json) gave: an HTTP status and body, or an error."""

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
    """One fetch per origin per ``ttl`` seconds per worker, even when many threads ask at once.

    ``fetch`` does the HTTP work (through the guarded, polite session) and never raises;
    it returns a ``RobotsFetch``. Every outcome (rules, 4xx "allow all", 5xx "disallow
    all") is kept for ``ttl`` (24 h by default, RFC 9309 2.4), then fetched again.
    """

    def __init__(self, fetch: Callable[[str], RobotsFetch], ttl: float = DEFAULT_TTL_SECONDS, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cache: OriginCache[RobotsRules] = OriginCache(
            lambda robots_url: rules_from_fetch(robots_url, fetch(robots_url)), ttl=ttl, size=size, clock=clock
        )

    def rules_for(self, url: str) -> RobotsRules:
        return self._cache.get(robots_url_for(url))

    def disallow_reason(self, url: str, user_agent_token: str) -> str | None:
        return self.rules_for(url).disallow_reason(url, user_agent_token)
