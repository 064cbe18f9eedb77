"""The ``{shard:06d}_stats.json`` document: counts by status and error kind, fetch timings, bytes.

Made to answer "why is my success rate low?" from one file: which statuses, which kinds of
error within each (HTTP 404, ReadTimeout, robots.txt, ...), which HTTP codes, how slow.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import Any

from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import FINAL_STATUSES


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (None for no values): simple, and exact on small shards."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))  # 1-based: the smallest value covering fraction
    return ordered[min(rank, len(ordered)) - 1]


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_HTTP_CODE = re.compile(r"^HTTP (\d{3})\b")
_NUMBER = re.compile(r"\d+(\.\d+)?")
_TOP_KINDS = 20  # per status; the rest are summed under "other"


def error_kind(message: str | None) -> str:
    """A short, stable grouping key for an error message (numbers and URLs folded away).

    ``ReadTimeout: ...`` -> ``ReadTimeout``; ``HTTP 404`` stays itself (the code matters);
    ``Content-Length 123 exceeds max_bytes 100`` -> ``Content-Length N exceeds max_bytes N``.
    """
    if not message:
        return "none"
    head, colon, _ = message.partition(": ")
    if colon and _IDENTIFIER.fullmatch(head):
        return head
    code = _HTTP_CODE.match(message)
    if code:
        return f"HTTP {code.group(1)}"
    if "robots.txt" in message:
        return "robots.txt unreachable" if "whole host" in message else "robots.txt disallows"
    folded = re.sub(r"\S+://\S+", "URL", message)
    folded = re.sub(r"'[^']*'|\b\d+x\d+\b", "X", folded)
    return _NUMBER.sub("N", folded)[:60]


def _error_kinds(rows: Sequence[Sample]) -> dict[str, dict[str, int]]:
    by_status: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in rows:
        if row.error_message is not None:
            by_status[row.status][error_kind(row.error_message)] += 1
    summary: dict[str, dict[str, int]] = {}
    for status, kinds in sorted(by_status.items()):
        top = dict(kinds.most_common(_TOP_KINDS))
        rest = sum(kinds.values()) - sum(top.values())
        summary[status] = {**top, **({"other": rest} if rest else {})}
    return summary


def shard_stats(
    shard_no: int, uri: str, rows: Sequence[Sample], tar_bytes: int, write_seconds: float
) -> dict[str, Any]:
    by_status = collections.Counter(row.status for row in rows)
    fetch_seconds = [row.fetch_seconds for row in rows if row.fetch_seconds is not None]
    ok_seconds = [row.fetch_seconds for row in rows if row.fetch_seconds is not None and row.sha256 is not None]
    http_codes = collections.Counter(str(row.http_status) for row in rows if row.http_status is not None)
    return {
        "shard_no": shard_no,
        "source": uri,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "candidates": len(rows),
        "status_counts": {status: by_status.get(status, 0) for status in sorted(FINAL_STATUSES)},
        "error_kinds": _error_kinds(rows),
        "http_status_counts": dict(sorted(http_codes.items())),
        "images_ok": sum(1 for row in rows if row.sha256 is not None),
        "kept": by_status.get("success", 0),
        "bytes": {
            "downloaded": sum(row.downloaded_bytes or 0 for row in rows),
            "downloaded_ok": sum(row.downloaded_bytes or 0 for row in rows if row.sha256 is not None),
            "tar": tar_bytes,
        },
        "fetch_seconds": {
            "count": len(fetch_seconds),
            "p50": percentile(fetch_seconds, 0.50),
            "p90": percentile(fetch_seconds, 0.90),
            "p99": percentile(fetch_seconds, 0.99),
            "max": max(fetch_seconds, default=None),
            "ok_p50": percentile(ok_seconds, 0.50),  # successful fetches only: failures skew both ways
            "ok_p90": percentile(ok_seconds, 0.90),
        },
        "write_seconds": round(write_seconds, 3),
    }
