"""Per-shard diagnosis: error kinds group messages so a low success rate can be explained."""

from __future__ import annotations

import pytest

from clipcrawl.io.shard_stats import error_kind, shard_stats
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("HTTP 404", "HTTP 404"),
        ("HTTP 503 with Retry-After 3600 s, more than max_retry_after 10 s", "HTTP 503"),
        ("ReadTimeout: HTTPConnectionPool(host='a', port=80): Read timed out.", "ReadTimeout"),
        ("ConnectionError: GuardedHTTPConnection(host='x'): Failed to resolve 'x'", "ConnectionError"),
        ("Content-Length 5000 exceeds max_bytes 1000", "Content-Length N exceeds max_bytes N"),
        ("total_timeout of 30 s exceeded", "total_timeout of N s exceeded"),
        ("http://h/robots.txt disallows /a.jpg for user-agent 'clipcrawl'", "robots.txt disallows"),
        ("http://h/robots.txt answered HTTP 503: the whole host is treated as disallowed", "robots.txt unreachable"),
        ("host 'a.example' resolves to private address 10.0.0.1", "host X resolves to private address N.N"),
        ("200x9 is below min_image_size 10", "X is below min_image_size N"),
        (None, "none"),
    ],
)
def test_error_kind_folds_details_away(message: str | None, kind: str) -> None:
    assert error_kind(message) == kind


def row(key: int, status: Status, message: str | None = None, seconds: float | None = 0.1,
        http_status: int | None = 200, size: int = 0, ok: bool = False) -> Sample:
    return Sample(key=f"{key:013d}", shard_no=0, url="http://h/x", caption="c", page_url="p", source="s",
                  status=status.value, error_message=message, fetch_seconds=seconds, http_status=http_status,
                  downloaded_bytes=size, sha256="ab" if ok else None)


def test_shard_stats_count_statuses_error_kinds_codes_and_latency() -> None:
    rows = [
        row(1, Status.SUCCESS, seconds=0.2, size=100, ok=True),
        row(2, Status.BELOW_THRESHOLD, seconds=0.4, size=50, ok=True),
        row(3, Status.FAILED_TO_DOWNLOAD, "HTTP 404", seconds=0.1, http_status=404),
        row(4, Status.FAILED_TO_DOWNLOAD, "HTTP 404", seconds=0.1, http_status=404),
        row(5, Status.FAILED_TO_DOWNLOAD, "ReadTimeout: slow", seconds=10.0, http_status=None),
        row(6, Status.DISALLOWED_ROBOTS, "http://h/robots.txt disallows /x for user-agent 'clipcrawl'", None, None),
    ]
    stats = shard_stats(0, "in.wat", rows, tar_bytes=123, write_seconds=0.5)
    assert stats["status_counts"]["failed_to_download"] == 3 and stats["status_counts"]["disallowed_robots"] == 1
    assert stats["status_counts"]["rate_limited"] == 0  # every status is listed, zero or not
    assert stats["error_kinds"] == {
        "disallowed_robots": {"robots.txt disallows": 1},
        "failed_to_download": {"HTTP 404": 2, "ReadTimeout": 1},
    }
    assert stats["http_status_counts"] == {"200": 2, "404": 2}
    assert (stats["fetch_seconds"]["p50"], stats["fetch_seconds"]["max"]) == (0.2, 10.0)
    assert (stats["fetch_seconds"]["ok_p50"], stats["fetch_seconds"]["ok_p90"]) == (0.2, 0.4)
    assert stats["bytes"] == {"downloaded": 150, "downloaded_ok": 150, "tar": 123}
