"""TDM-Rep's /.well-known/tdmrep.json: rule matching as pure functions, then the fetch
rules (once per origin, 404, 5xx, invalid JSON) against the hostile loopback server."""

from __future__ import annotations

import json

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from clipcrawl.io.shard_stats import error_kind
from clipcrawl.pipelines.options import resolve_config
from clipcrawl.transforms.download import download_sample
from clipcrawl.transforms.fetch import Fetcher
from clipcrawl.transforms.robots import RobotsFetch
from clipcrawl.transforms.status import Status
from clipcrawl.transforms.tdmrep import (
    INVALID,
    RETRY_FAILED_SECONDS,
    UNREACHABLE,
    TdmRepRules,
    TdmRule,
    parse_tdmrep,
    rules_from_fetch,
    tdmrep_url_for,
)
from tests import hostile_server as hs
from tests.conftest import download_batches
from tests.test_download_hostile import JPEG, hostile_config, sample
from tests.test_download_politeness import FakeClock

TDMREP = "/.well-known/tdmrep.json"
RULES = [
    {"location": "/", "tdm-reservation": 0},
    {"location": "/images/", "tdm-reservation": 1, "tdm-policy": "https://h.example/policy.json"},
    {"location": "/images/free/", "tdm-reservation": 0},
    {"location": "/gallery/*/full/", "tdm-reservation": 1},
    {"location": "/*.png$", "tdm-reservation": 1},
]


def as_json(rules: object) -> hs.Handler:
    return hs.send(json.dumps(rules).encode(), content_type="application/json")


@pytest.mark.parametrize(
    ("path", "reserved_by"),
    [
        ("/a.jpg", None),  # only "/" (reservation 0) matches
        ("/images/a.jpg", "/images/"),
        ("/images/free/a.jpg", None),  # the longer location wins, and it reserves nothing
        ("/images/freedom/a.jpg", "/images/"),  # a prefix of the path, not of a directory name
        ("/gallery/2024/full/a.jpg", "/gallery/*/full/"),  # * spans any characters
        ("/gallery/2024/thumb/a.jpg", None),
        ("/x/y.png", "/*.png$"),
        ("/x/y.png.jpg", None),  # $ anchors the end
        ("/images%2Fa.jpg", "/images/"),  # percent-escapes are decoded before matching
    ],
)
def test_the_most_specific_location_decides(path: str, reserved_by: str | None) -> None:
    rules = TdmRepRules("http://h:80" + TDMREP, parse_tdmrep(json.dumps(RULES).encode())[0])
    rule = rules.rule_for(path)
    assert (rule.location if rule is not None and rule.reserved else None) == reserved_by


def test_a_tie_between_equally_long_locations_keeps_the_reservation() -> None:
    rules = TdmRepRules(TDMREP, (TdmRule("/a*", False), TdmRule("/*b", True)))
    assert rules.rule_for("/ab").reserved is True


def test_query_is_not_part_of_the_path_and_the_message_names_the_file() -> None:
    rules = TdmRepRules("https://h:443" + TDMREP, (TdmRule("/*.jpg$", True, "https://h/p"),))
    reason = rules.reservation_reason("https://h/a.jpg?size=big")
    assert reason == ("tdmrep.json: https://h:443/.well-known/tdmrep.json reserves text and data mining rights for "
                      "/a.jpg (location '/*.jpg$', tdm-reservation 1, tdm-policy https://h/p)")


@pytest.mark.parametrize(
    ("body", "kind", "locations"),
    [
        (json.dumps(RULES).encode(), None, 5),
        (b"\xef\xbb\xbf" + json.dumps(RULES).encode(), None, 5),  # a UTF-8 byte-order mark is fine
        (b"[]", None, 0),
        (b"<html>not found</html>", INVALID, 0),
        (b'{"location": "/", "tdm-reservation": 1}', INVALID, 0),  # an object, not an array
        (b'[{"location": "/a/", "tdm-reservation": 1}, {"location": "/b/"}, "x", '
         b'{"location": "/c/", "tdm-reservation": 2}, {"location": "/d/", "tdm-reservation": true}]', INVALID, 1),
    ],
)
def test_parsing_keeps_well_formed_rules_and_flags_the_rest(body: bytes, kind: str | None, locations: int) -> None:
    rules = rules_from_fetch("http://h:80" + TDMREP, RobotsFetch(200, body))
    assert (rules.problem_kind, len(rules.rules)) == (kind, locations)


@pytest.mark.parametrize(
    ("fetched", "kind"),
    [(RobotsFetch(404), None), (RobotsFetch(403), None), (RobotsFetch(429), UNREACHABLE),
     (RobotsFetch(503), UNREACHABLE), (RobotsFetch(error="ConnectionError: refused"), UNREACHABLE)],
)
def test_no_file_means_no_reservation(fetched: RobotsFetch, kind: str | None) -> None:
    rules = rules_from_fetch("http://h:80" + TDMREP, fetched)
    assert (rules.rules, rules.problem_kind) == ((), kind)
    assert rules.reservation_reason("http://h/anything.jpg") is None


def test_the_file_is_per_origin() -> None:
    assert tdmrep_url_for("https://u:p@h.example:8443/a/b.jpg?x") == "https://h.example:8443/.well-known/tdmrep.json"


def test_matching_rule_refuses_and_the_image_is_never_requested() -> None:
    routes = {TDMREP: as_json(RULES), "/images/a.jpg": hs.send(JPEG), "/images/free/a.jpg": hs.send(JPEG),
              "/gallery/7/full/a.jpg": hs.send(JPEG), "/redirect": hs.redirect("/images/a.jpg")}
    with hs.HostileServer(routes) as server:
        fetcher = Fetcher(hostile_config(server))
        try:
            refused = download_sample(fetcher, sample(server.url("/images/a.jpg"), 1))
            allowed = download_sample(fetcher, sample(server.url("/images/free/a.jpg"), 2))
            wildcard = download_sample(fetcher, sample(server.url("/gallery/7/full/a.jpg"), 3))
            redirected = download_sample(fetcher, sample(server.url("/redirect"), 4))
        finally:
            fetcher.close()
        assert refused.status == Status.DISALLOWED_TDM
        assert refused.error_message.startswith(f"tdmrep.json: http://{server.authority}{TDMREP} reserves")
        assert "/images/a.jpg (location '/images/', tdm-reservation 1" in refused.error_message
        assert error_kind(refused.error_message) == "tdmrep.json"  # one stable kind in _stats.json
        assert allowed.status == Status.PENDING
        assert wildcard.status == Status.DISALLOWED_TDM
        assert redirected.status == Status.DISALLOWED_TDM  # every redirect hop is checked, like robots.txt
        assert server.paths().count(TDMREP) == 1
        assert "/images/a.jpg" not in server.paths() and "/gallery/7/full/a.jpg" not in server.paths()


def test_fetched_once_per_origin_by_many_threads() -> None:
    routes = {TDMREP: as_json([{"location": "/no/", "tdm-reservation": 1}]), "/ok.jpg": hs.send(JPEG),
              "/no/a.jpg": hs.send(JPEG)}
    with hs.HostileServer(routes) as first, hs.HostileServer(routes) as second:
        batch = [sample(server.url(path + f"?{n}"), n * 10 + i)
                 for n in range(6) for i, (server, path) in enumerate(
                     [(first, "/ok.jpg"), (first, "/no/a.jpg"), (second, "/ok.jpg"), (second, "/no/a.jpg")])]
        config = hostile_config(first, allowed_hosts=(first.authority, second.authority), threads=8,
                                per_host_connections=0)
        results = download_batches(config, batch)
    assert sorted(r.status for r in results) == sorted([Status.PENDING] * 12 + [Status.DISALLOWED_TDM] * 12)
    assert all((r.status == Status.DISALLOWED_TDM) == ("/no/" in r.url) for r in results)
    assert first.paths().count(TDMREP) == 1 and second.paths().count(TDMREP) == 1


@pytest.mark.parametrize(
    ("handler", "counts"),
    [
        (hs.NOT_FOUND, {}),
        (hs.send(b"[{location: /}", content_type="application/json"), {"tdmrep_invalid": 1}),
        (hs.send(b"oops", status=500, content_type="text/plain"), {"tdmrep_unreachable": 1}),
        (hs.stall(3.0), {"tdmrep_unreachable": 1}),  # past the 1 s deadline
    ],
)
def test_a_missing_broken_or_unreachable_file_reserves_nothing_and_is_counted(handler: hs.Handler,
                                                                              counts: dict[str, int]) -> None:
    with hs.HostileServer({TDMREP: handler, "/a.jpg": hs.send(JPEG)}) as server:
        fetcher = Fetcher(hostile_config(server))
        try:
            results = [download_sample(fetcher, sample(server.url(f"/a.jpg?{n}"), n)) for n in range(3)]
            assert fetcher.drain_counts() == counts
            assert fetcher.drain_counts() == {}  # drained
        finally:
            fetcher.close()
        assert [r.status for r in results] == [Status.PENDING] * 3
        assert server.paths().count(TDMREP) == 1


def test_an_unreachable_file_is_asked_again_sooner_than_a_good_one() -> None:
    clock = FakeClock()
    routes = {TDMREP: hs.sequence(hs.send(b"busy", status=503, content_type="text/plain"),
                                  as_json([{"location": "/", "tdm-reservation": 1}])),
              "/a.jpg": hs.send(JPEG)}
    with hs.HostileServer(routes) as server:
        fetcher = Fetcher(hostile_config(server), policy_clock=clock)
        try:
            assert download_sample(fetcher, sample(server.url("/a.jpg"))).status == Status.PENDING
            clock.now += RETRY_FAILED_SECONDS - 1
            assert download_sample(fetcher, sample(server.url("/a.jpg"))).status == Status.PENDING
            assert server.paths().count(TDMREP) == 1
            clock.now += 2
            assert download_sample(fetcher, sample(server.url("/a.jpg"))).status == Status.DISALLOWED_TDM
            clock.now += 23 * 3600  # a good answer lasts the full cache time
            assert download_sample(fetcher, sample(server.url("/a.jpg"))).status == Status.DISALLOWED_TDM
            assert server.paths().count(TDMREP) == 2
            clock.now += 3600
            download_sample(fetcher, sample(server.url("/a.jpg")))
            assert server.paths().count(TDMREP) == 3
        finally:
            fetcher.close()


@pytest.mark.parametrize("switch", [{"respect_tdmrep_json": False}, {"respect_tdm_reservation": False}])
def test_the_file_can_be_ignored(switch: dict[str, bool]) -> None:
    routes = {TDMREP: as_json([{"location": "/", "tdm-reservation": 1}]), "/a.jpg": hs.send(JPEG)}
    with hs.HostileServer(routes) as server:
        fetcher = Fetcher(hostile_config(server, **switch))
        try:
            assert download_sample(fetcher, sample(server.url("/a.jpg"))).status == Status.PENDING
        finally:
            fetcher.close()
        assert TDMREP not in server.paths()


def test_options_reach_the_download_config(tmp_path: object) -> None:
    base = ["--input=x.wat.gz", f"--output={tmp_path}"]
    default = resolve_config(PipelineOptions(base)).download
    assert (default.respect_tdmrep_json, default.respect_tdm_reservation, default.robots_cache_seconds) == (
        True, True, 86400.0)
    changed = resolve_config(PipelineOptions(base + ["--ignore_tdmrep_json", "--robots_cache_seconds=600",
                                                     "--ca_bundle=/etc/ssl/x.pem"])).download
    assert (changed.respect_tdmrep_json, changed.robots_cache_seconds, changed.ca_bundle) == (
        False, 600.0, "/etc/ssl/x.pem")
    with pytest.raises(ValueError, match="robots_cache_seconds"):
        resolve_config(PipelineOptions(base + ["--robots_cache_seconds=0"]))
