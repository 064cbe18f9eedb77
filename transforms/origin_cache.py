"""A per-origin cache for site-wide policy files (robots.txt, tdmrep.json): one fetch per
origin at a time, kept for a bounded time, bounded in size.

Many download threads ask about the same origin at once; only one of them fetches, the
others wait for its answer. Entries expire: RFC 9309 (2.4) says a robots.txt cache should
not be used for more than 24 hours, and a long-running worker would otherwise follow a
site's rules of last week. The least recently used origins are forgotten past ``size``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_TTL_SECONDS = 24 * 3600.0


class _KeyLock:
    """A lock for one key, dropped once no thread holds or awaits it."""

    def __init__(self) -> None:
        self.lock, self.users = threading.Lock(), 0


class OriginCache(Generic[T]):
    """``get(key)`` gives ``load(key)``, computed once per ``ttl`` seconds per key.

    ``load`` should not raise for ordinary failures (they are answers to cache too); an
    exception it raises reaches the caller and nothing is cached. ``ttl_for`` may shorten
    the life of some answers (a failed fetch worth retrying sooner). ``clock`` is monotonic.
    """

    def __init__(self, load: Callable[[str], T], ttl: float = DEFAULT_TTL_SECONDS, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 ttl_for: Callable[[T], float] | None = None) -> None:
        if not ttl > 0:
            raise ValueError(f"cache ttl must be a positive number of seconds, got {ttl}")
        self._load, self._ttl, self._size, self._clock, self._ttl_for = load, ttl, size, clock, ttl_for
        self._entries: collections.OrderedDict[str, tuple[float, T]] = collections.OrderedDict()
        self._key_locks: dict[str, _KeyLock] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> T:
        found = self._fresh(key)
        if found is not None:
            return found[1]
        with self._lock:
            waiting = self._key_locks.setdefault(key, _KeyLock())
            waiting.users += 1
        try:
            with waiting.lock:  # threads asking for the same key wait for the one load
                found = self._fresh(key)
                if found is None:
                    found = self._store(key, self._load(key))
        finally:
            with self._lock:
                waiting.users -= 1
                if not waiting.users:
                    del self._key_locks[key]
        return found[1]

    def _store(self, key: str, value: T) -> tuple[float, T]:
        lifetime = self._ttl if self._ttl_for is None else min(self._ttl, self._ttl_for(value))
        entry = (self._clock() + lifetime, value)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return entry

    def _fresh(self, key: str) -> tuple[float, T] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
