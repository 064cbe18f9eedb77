"""A requests session whose sockets only ever connect to addresses the SSRF guard checked.

The guard lives at the socket: urllib3 opens every connection through ``_new_conn``, which
here resolves the host once (through a small DNS cache), checks every address with the
``AddressPolicy``, and connects to a checked address itself. The Host header and TLS SNI
still carry the name, because urllib3 takes them from the connection's host, not from
the socket. This is the usual "pin the resolved address" fix for DNS rebinding, done at
the one place a socket is made, so redirects, robots.txt and retries are all covered.

The same connections enforce the per-request total deadline while the response headers
arrive: a server dripping one header byte per second never trips a read timeout, so a
shared watchdog thread shuts the socket down when the deadline passes. (Connecting and the
TLS handshake need no watchdog: each runs under one timeout of at most the time left, and
CPython bounds a whole handshake, not each read of it, by the socket's timeout.)
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import http.cookiejar
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from clipcrawl.transforms.address_guard import AddressPolicy, Resolver, checked_addresses


class DnsCache:
    """getaddrinfo answers kept for ``ttl`` seconds: one lookup per host, not per image.

    A cached answer is still checked by the guard on every connection, so caching never
    lets a private address through. Bounded: the oldest entries go first.
    """

    def __init__(self, resolver: Resolver = socket.getaddrinfo, ttl: float = 300.0, size: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._resolver, self._ttl, self._size, self._clock = resolver, ttl, size, clock
        self._entries: collections.OrderedDict[tuple[str, Any], tuple[float, list]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, host: str, port: Any) -> list:
        key, now = (host.lower(), port), self._clock()
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        answer = list(self._resolver(host, port))
        with self._lock:
            self._entries[key] = (now + self._ttl, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return answer


class DeadlineWatchdog:
    """One daemon thread that shuts down sockets whose request deadline has passed.

    ``shared()`` gives the process's one watchdog: its thread never exits, so a worker (or
    a test suite) making many fetchers must not start one each.
    """

    _shared: DeadlineWatchdog | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> DeadlineWatchdog:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._cancelled: set[int] = set()
        self._live: set[int] = set()  # ids still in the heap
        self._ids = itertools.count()
        self._wake = threading.Condition()
        self._local = threading.local()
        threading.Thread(target=self._run, daemon=True, name="clipcrawl-deadline").start()

    @contextlib.contextmanager
    def scope(self, deadline: float) -> Iterator[None]:
        """Sockets used by this thread inside the block are cut at ``deadline`` (monotonic)."""
        self._local.deadline, self._local.ids = deadline, []
        try:
            yield
        finally:
            with self._wake:
                self._cancelled.update(self._live.intersection(self._local.ids))
            self._local.deadline, self._local.ids = None, []

    def watch(self, sock: socket.socket | None) -> None:
        deadline = getattr(self._local, "deadline", None)
        if sock is None or deadline is None:
            return
        entry_id = next(self._ids)
        self._local.ids.append(entry_id)
        with self._wake:
            heapq.heappush(self._heap, (deadline, entry_id, sock))
            self._live.add(entry_id)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][1] in self._cancelled:
                    cancelled_id = heapq.heappop(self._heap)[1]
                    self._cancelled.discard(cancelled_id)
                    self._live.discard(cancelled_id)
                if not self._heap:
                    self._wake.wait()
                    continue
                deadline, entry_id, sock = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(entry_id)
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # base method: leaves TLS state alone


class _GuardedConnectionMixin:
    """Connects only to addresses ``checked_addresses`` returned; arms the deadline watchdog."""

    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    sock: socket.socket | None

    def __init__(self, *args: Any, policy: AddressPolicy, resolver: Resolver, watchdog: DeadlineWatchdog,
                 **kwargs: Any) -> None:
        self._policy, self._resolver, self._watchdog = policy, resolver, watchdog
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        try:
            addresses = checked_addresses(self.host, self.port, self._policy, self._resolver)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error  # type: ignore[arg-type]
        last_error: OSError | None = None
        for address in addresses:  # each one checked; never a fresh lookup
            try:
                return urllib3_connection.create_connection(
                    (address, self.port), self.timeout, self.source_address, self.socket_options
                )
            except TimeoutError as error:
                raise ConnectTimeoutError(self, f"connect to {self.host} ({address}) timed out") from error
            except OSError as error:
                last_error = error
        raise NewConnectionError(self, f"Failed to establish a new connection: {last_error}")  # type: ignore[arg-type]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        self._watchdog.watch(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(requests.adapters.HTTPAdapter):
    """An HTTPAdapter whose pools make guarded connections (the policy rides in conn_kw)."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver, watchdog: DeadlineWatchdog,
                 pool_maxsize: int, pool_connections: int) -> None:
        self._guard_kw = {"policy": policy, "resolver": resolver, "watchdog": watchdog}
        super().__init__(pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs, **self._guard_kw)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        # conn_kw reach the connection, but PoolManager builds its pool key from them: keep them out of it.
        self.poolmanager.key_fn_by_scheme = {
            scheme: _key_without_guard(key_fn) for scheme, key_fn in self.poolmanager.key_fn_by_scheme.items()
        }


def _key_without_guard(key_fn: Callable[[dict], Any]) -> Callable[[dict], Any]:
    def key(context: dict) -> Any:
        return key_fn({k: v for k, v in context.items() if k not in ("policy", "resolver", "watchdog")})

    return key


def make_guarded_session(policy: AddressPolicy, resolver: Resolver, watchdog: DeadlineWatchdog,
                         user_agent: str, pool_maxsize: int, pool_connections: int = 64,
                         ca_bundle: str | None = None) -> requests.Session:
    """A session that keeps no state between samples and only reaches checked addresses.

    Environment proxies and .netrc are ignored (a proxy would connect for us, unchecked),
    and cookies are refused so one site's cookies never travel with another's request.
    Certificates are checked against ``ca_bundle`` when given, else ``REQUESTS_CA_BUNDLE``
    (or ``CURL_CA_BUNDLE``) as requests itself would, else the system's CAs: ignoring the
    environment for proxies must not also drop a CA bundle someone set on purpose.
    """
    session = requests.Session()
    session.trust_env = False
    verify = ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if verify:
        if not os.path.exists(verify):
            raise ValueError(f"CA bundle {verify!r} does not exist on this worker")
        session.verify = verify
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.headers["User-Agent"] = user_agent
    adapter = GuardedAdapter(policy, resolver, watchdog, pool_maxsize=pool_maxsize, pool_connections=pool_connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
