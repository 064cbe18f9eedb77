"""The ``{shard:06d}_stats.json`` document: counts by status, fetch timings, bytes."""

from __future__ import annotations

import collections
import math
import datetime as dt
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


def shard_stats(
    shard_no: int, uri: str, rows: Sequence[Sample], tar_bytes: int, write_seconds: float
) -> dict[str, Any]:
    by_status = collections.Counter(row.status for row in rows)
    fetch_seconds = [row.fetch_seconds for row in rows if row.fetch_seconds is not None]
    return {
        "shard_no": shard_no,
        "source": uri,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "candidates": len(rows),
        "status_counts": {status: by_status.get(status, 0) for status in sorted(FINAL_STATUSES)},
        "images_ok": sum(1 for row in rows if row.sha256 is not None),
        "kept": by_status.get("success", 0),
        "bytes": {
            "downloaded": sum(row.downloaded_bytes or 0 for row in rows),
            "tar": tar_bytes,
        },
        "fetch_seconds": {
            "count": len(fetch_seconds),
            "p50": percentile(fetch_seconds, 0.50),
            "p90": percentile(fetch_seconds, 0.90),
            "p99": percentile(fetch_seconds, 0.99),
            "max": max(fetch_seconds, default=None),
        },
        "write_seconds": round(write_seconds, 3),
    }
