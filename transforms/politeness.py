"""Per-host politeness: a concurrency and rate gate shared by a worker's threads, 429/503
back-off, and the header opt-outs (X-Robots-Tag, TDM-Rep), one pure function per decision.

A "host" is an origin (scheme, host, port), the unit robots.txt and HTTP connection pools
use too. Limits are per worker process: a fleet of N workers can reach N times the rate,
which is why inputs should be shuffled across hosts (as Common Crawl's are).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import threading
import time
from collections.abc import Callable, Iterable, Iterator

_AI_OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai", "noml", "noindex", "none"})
# Directives that are "name: value" rather than "user-agent: directive".
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
# An opt-out addressed to img2dataset is addressed to dataset builders like this one.
_ALSO_ADDRESSED_TO = frozenset({"img2dataset"})
_MAX_TRACKED_HOSTS = 10_000


class HostBusyError(Exception):
    """The host gave no slot within the time a sample may wait (limits or a 429 back-off)."""


@dataclasses.dataclass
class _HostState:
    active: int = 0
    next_start: float = 0.0  # earliest monotonic time the next request may start (rate)
    backoff_until: float = 0.0  # set by 429/503 answers


class HostGate:
    """At most ``max_connections`` requests in flight and ``rate`` starts per second per host.

    Shared by the download threads of one worker. Waiting is bounded by the caller's
    ``give_up_at``: a host that is backing off for an hour makes its samples fail fast
    instead of parking every thread. ``0`` turns a limit off.
    """

    def __init__(self, max_connections: int, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._max, self._interval = max_connections, (1.0 / rate if rate > 0 else 0.0)
        self._clock, self._sleep = clock, sleep
        self._hosts: dict[str, _HostState] = {}
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self, host: str, give_up_at: float) -> Iterator[float]:
        """Hold one of ``host``'s slots; yields the seconds spent waiting for it."""
        waited = self._acquire(host, give_up_at)
        try:
            yield waited
        finally:
            with self._changed:
                self._hosts[host].active -= 1
                self._changed.notify_all()

    def back_off(self, host: str, seconds: float) -> None:
        """No new request to ``host`` starts for ``seconds`` (a 429/503 said so)."""
        with self._changed:
            state = self._hosts.setdefault(host, _HostState())
            state.backoff_until = max(state.backoff_until, self._clock() + seconds)

    def _acquire(self, host: str, give_up_at: float) -> float:
        began = self._clock()
        with self._changed:
            while True:
                state = self._hosts.setdefault(host, _HostState())
                now = self._clock()
                if state.backoff_until > give_up_at:
                    raise HostBusyError(
                        f"host {host} asked us to back off for {state.backoff_until - now:.0f} s more, "
                        "longer than max_host_wait"
                    )
                if self._max and state.active >= self._max:
                    if now >= give_up_at:
                        raise HostBusyError(f"no free connection to {host} within max_host_wait")
                    self._changed.wait(give_up_at - now)
                    continue
                start = max(now, state.next_start, state.backoff_until)
                if start > give_up_at:
                    raise HostBusyError(f"host {host} rate limit leaves no start within max_host_wait")
                state.active += 1
                state.next_start = start + self._interval
                self._forget_idle_hosts(now)
                break
        if start > now:
            self._sleep(start - now)  # the start time is reserved; wait outside the lock
        return self._clock() - began

    def _forget_idle_hosts(self, now: float) -> None:
        if len(self._hosts) <= _MAX_TRACKED_HOSTS:
            return
        for name in [n for n, s in self._hosts.items() if not s.active and max(s.next_start, s.backoff_until) < now]:
            del self._hosts[name]


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), else None.

    ``now`` is unix time, for dates; unparseable values are None so the caller's default applies.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def robots_tag_opt_out(values: Iterable[str], user_agent_token: str) -> str | None:
    """The X-Robots-Tag directive that opts out of use by this crawler, if any.

    ``noai``/``noimageai``/``noml`` opt out of AI training; ``noindex`` (and ``none``)
    asks not to be listed anywhere, and a dataset is an index. Lines look like
    ``noai, noimageai`` or ``clipcrawl: noai``; a ``name:`` prefix addresses the
    directives after it to one crawler.
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
                return directive
    return None


def tdm_reserved(values: Iterable[str]) -> bool:
    """True when a TDM-Rep ``tdm-reservation`` header reserves text-and-data-mining rights."""
    return any(value.strip() == "1" for value in values)
