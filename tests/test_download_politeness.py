"""Politeness: the per-host gate (fake clock), Retry-After, robots.txt rules, and the
per-host connection limit as the hostile server observes it."""

from __future__ import annotations

import threading

import pytest

from clipcrawl.transforms.download import _DownloadBatchFn, download_sample
from clipcrawl.transforms.fetch import Fetcher
from clipcrawl.transforms.guarded_http import DnsCache
from clipcrawl.transforms.origin_cache import OriginCache
from clipcrawl.transforms.politeness import HostBusyError, HostGate, retry_after_seconds, tdm_reserved
from clipcrawl.transforms.robots import RobotsFetch, robots_url_for, rules_from_fetch
from clipcrawl.transforms.status import Status
from tests.conftest import download_batches
from tests import hostile_server as hs
from tests.test_download_hostile import JPEG, hostile_config, sample


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_rate_limit_spaces_request_starts_per_host() -> None:
    clock = FakeClock()
    gate = HostGate(max_connections=0, rate=4.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        with gate.slot("http://a:80", give_up_at=clock.now + 60):
            pass
    with gate.slot("http://b:80", give_up_at=clock.now + 60):  # another host is not held back
        pass
    assert clock.sleeps == [0.25, 0.25]


def test_back_off_delays_the_host_and_fails_fast_beyond_the_wait_bound() -> None:
    clock = FakeClock()
    gate = HostGate(max_connections=0, rate=0.0, clock=clock, sleep=clock.sleep)
    gate.back_off("http://a:80", 5.0)
    with gate.slot("http://a:80", give_up_at=clock.now + 10) as waited:
        assert waited == 5.0
    gate.back_off("http://a:80", 3600.0)
    with pytest.raises(HostBusyError, match="back off for 3600 s"):
        with gate.slot("http://a:80", give_up_at=clock.now + 10):
            pass
    assert clock.sleeps == [5.0]  # refused without sleeping


def test_connection_limit_blocks_until_a_slot_frees_or_the_wait_ends() -> None:
    gate = HostGate(max_connections=1, rate=0.0)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with gate.slot("http://a:80", give_up_at=float("inf")):
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    with pytest.raises(HostBusyError, match="no free connection"):
        with gate.slot("http://a:80", give_up_at=0.0):  # already past: no waiting at all
            pass
    release.set()
    holder.join(5)
    with gate.slot("http://a:80", give_up_at=float("inf")):
        pass


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 0 ", 0.0), ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0), ("soon", None), (None, None),
     ("-5", None), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
)
def test_retry_after_parsing(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=40.0) == seconds


@pytest.mark.parametrize(("values", "reserved"), [(["1"], True), ([" 1"], True), (["0"], False), ([], False)])
def test_tdm_reservation(values: list[str], reserved: bool) -> None:
    assert tdm_reserved(values) is reserved


ROBOTS_URL = "http://h:80/robots.txt"


@pytest.mark.parametrize(
    ("fetched", "url", "allowed", "reason_part"),
    [
        (RobotsFetch(200, b"User-agent: *\nDisallow: /*.jpg$\n"), "http://h/a.jpg", False, "disallows /a.jpg"),
        (RobotsFetch(200, b"User-agent: *\nDisallow: /*.jpg$\n"), "http://h/a.jpg?x=1", True, ""),
        (RobotsFetch(200, b"User-agent: *\nDisallow: /img/\nAllow: /img/ok/\n"), "http://h/img/ok/a.jpg", True, ""),
        (RobotsFetch(200, b"User-agent: clipcrawl\nDisallow: /\n\nUser-agent: *\nAllow: /\n"), "http://h/a", False,
         "for user-agent 'clipcrawl'"),
        (RobotsFetch(200, b"User-agent: otherbot\nDisallow: /\n"), "http://h/a", True, ""),
        (RobotsFetch(404), "http://h/a", True, ""),
        (RobotsFetch(401), "http://h/a", True, ""),
        (RobotsFetch(429), "http://h/a", False, "answered HTTP 429"),
        (RobotsFetch(503), "http://h/a", False, "answered HTTP 503: the whole host is treated as disallowed"),
        (RobotsFetch(error="ConnectionError: reset"), "http://h/a", False, "unreachable (ConnectionError: reset)"),
    ],
)
def test_robots_rules_follow_rfc_9309(fetched: RobotsFetch, url: str, allowed: bool, reason_part: str) -> None:
    reason = rules_from_fetch(ROBOTS_URL, fetched).disallow_reason(url, "clipcrawl")
    assert (reason is None) is allowed
    if not allowed:
        assert reason_part in reason


@pytest.mark.parametrize(
    ("url", "robots"),
    [("http://h/a/b?c", "http://h/robots.txt"), ("https://u:p@h:8443/x", "https://h:8443/robots.txt")],
)
def test_robots_url_is_per_origin(url: str, robots: str) -> None:
    assert robots_url_for(url) == robots


def test_unreachable_robots_txt_disallows_the_whole_host() -> None:
    routes = {"/robots.txt": hs.send(b"down", status=503, content_type="text/plain"), "/a.jpg": hs.send(JPEG)}
    with hs.HostileServer(routes) as server:
        fetcher = Fetcher(hostile_config(server))
        results = [download_sample(fetcher, sample(server.url("/a.jpg"), key)) for key in range(3)]
        fetcher.close()
        assert {r.status for r in results} == {Status.DISALLOWED_ROBOTS}
        assert "answered HTTP 503" in results[0].error_message
        assert server.paths() == ["/robots.txt"]  # fetched once, and no image was requested


def test_robots_txt_is_fetched_again_after_the_cache_time() -> None:
    """RFC 9309 2.4: a cached robots.txt is used for at most a day (here an hour, on a fake clock)."""
    clock = FakeClock()
    robots = hs.sequence(hs.send(b"User-agent: *\nDisallow: /b/\n", content_type="text/plain"),
                         hs.send(b"User-agent: *\nDisallow: /a/\n", content_type="text/plain"))
    with hs.HostileServer({"/robots.txt": robots, "/a/x.jpg": hs.send(JPEG), "/b/x.jpg": hs.send(JPEG)}) as server:
        config = hostile_config(server, robots_cache_seconds=3600.0, respect_tdmrep_json=False)
        fetcher = Fetcher(config, policy_clock=clock)

        def statuses() -> list[str]:
            return [download_sample(fetcher, sample(server.url(path))).status for path in ("/a/x.jpg", "/b/x.jpg")]

        try:
            assert statuses() == [Status.PENDING, Status.DISALLOWED_ROBOTS]
            clock.now += 3599.0
            assert statuses() == [Status.PENDING, Status.DISALLOWED_ROBOTS]  # still the cached rules
            assert server.paths().count("/robots.txt") == 1
            clock.now += 2.0
            assert statuses() == [Status.DISALLOWED_ROBOTS, Status.PENDING]  # the new rules
            assert server.paths().count("/robots.txt") == 2
        finally:
            fetcher.close()


def test_origin_cache_loads_once_for_many_threads_and_expires() -> None:
    clock = FakeClock()
    loads: list[str] = []
    release = threading.Event()

    def load(key: str) -> str:
        loads.append(key)
        release.wait(5)
        return f"rules of {key}"

    cache: OriginCache[str] = OriginCache(load, ttl=10.0, size=2, clock=clock,
                                          ttl_for=lambda value: 1.0 if "short" in value else 60.0)
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get("a"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert answers == ["rules of a"] * 8 and loads == ["a"]
    clock.now += 9.0
    cache.get("a")
    assert loads == ["a"]
    clock.now += 1.0  # ttl reached: loaded again
    cache.get("a")
    assert loads == ["a", "a"]
    cache.get("short")
    clock.now += 1.0  # ttl_for shortened this one
    cache.get("short")
    assert loads == ["a", "a", "short", "short"]
    cache.get("b")  # size 2: "a", the least recently used, is forgotten
    cache.get("a")
    assert loads[-2:] == ["b", "a"] and len(cache) == 2
    with pytest.raises(ValueError, match="positive"):
        OriginCache(load, ttl=0)


def test_robots_can_be_ignored() -> None:
    with hs.HostileServer({"/robots.txt": hs.send(b"User-agent: *\nDisallow: /\n"), "/a.jpg": hs.send(JPEG)}) as server:
        fetcher = Fetcher(hostile_config(server, respect_robots_txt=False))
        assert download_sample(fetcher, sample(server.url("/a.jpg"))).status == Status.PENDING
        fetcher.close()
        assert server.paths() == ["/.well-known/tdmrep.json", "/a.jpg"]  # no robots.txt; TDM-Rep still asked


@pytest.mark.parametrize("limit", [1, 2])
def test_per_host_connection_limit_holds_at_the_server(limit: int) -> None:
    def slow_image(conn: object, request: hs.Request) -> None:
        threading.Event().wait(0.1)
        hs.send(JPEG)(conn, request)  # type: ignore[arg-type]

    with hs.HostileServer({"/slow.jpg": slow_image}) as server:
        batch = [sample(server.url(f"/slow.jpg?{n}"), n) for n in range(8)]
        # Generous timeouts: only the limit is under test, and a loaded CI machine is slow.
        config = hostile_config(server, threads=8, per_host_connections=limit, total_timeout=30.0,
                                read_timeout=10.0, connect_timeout=10.0)
        results = download_batches(config, batch)
        assert [r.status for r in results] == [Status.PENDING] * 8
        assert 1 <= server.max_concurrent[server.authority] <= limit
        assert len(server.paths()) == 10  # robots.txt and tdmrep.json once, then every image


def test_dns_cache_answers_repeat_lookups_until_the_ttl() -> None:
    calls: list[str] = []
    now = [0.0]

    def resolver(host: str, port: object) -> list[tuple]:
        calls.append(host)
        return [(2, 1, 6, "", ("93.184.216.34", 0))]

    cache = DnsCache(resolver, ttl=10.0, clock=lambda: now[0])
    cache("a.example", 80)
    cache("A.example", 80)
    now[0] = 11.0
    cache("a.example", 80)
    assert calls == ["a.example", "a.example"]


def test_a_slow_server_does_not_hold_up_the_rest_of_its_batch() -> None:
    """The held image answers only once the test says so, after process() has handed on the
    fast ones; waiting for the whole batch would time it out instead."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    release = threading.Event()

    def held_image(conn: object, request: hs.Request) -> None:
        release.wait(10)
        hs.send(JPEG)(conn, request)  # type: ignore[arg-type]

    with hs.HostileServer({"/held.jpg": held_image, "/fast.jpg": hs.send(JPEG)}) as server:
        batch = [sample(server.url("/held.jpg"), 0)] + [sample(server.url(f"/fast.jpg?{n}"), n) for n in range(1, 6)]
        config = hostile_config(server, threads=4, per_host_connections=0, total_timeout=8.0, read_timeout=8.0)
        fn = _DownloadBatchFn(config, max_in_flight=1)
        fn.setup()
        try:
            fn.start_bundle()
            early = [windowed.value for windowed in fn.process(batch, Timestamp(0), GlobalWindow())]
            release.set()
            late = [windowed.value for windowed in fn.finish_bundle()]
        finally:
            release.set()
            fn.teardown()
    assert sorted(s.key for s in early) == sorted(s.key for s in batch[1:])
    assert [(s.key, s.status) for s in late] == [(batch[0].key, Status.PENDING)]
    assert late[0].image is not None
