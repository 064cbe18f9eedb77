"""Beam metric names, fixed in one place (namespace per stage; total/forwarded/dropped_*).

Every stage counts what it receives (``total``), what it passes on for more work
(``forwarded``) and what it ends early (``dropped`` plus ``dropped_{status}``). Queries in
tests and dashboards use these constants, never string literals.
"""

from __future__ import annotations

from apache_beam.metrics import Metrics

NAMESPACE = "clipcrawl"

READ = "read"
EXTRACT = "extract"
FILTER = "filter"
DEDUP = "dedup"
DOWNLOAD = "download"
SCORE = "score"
WRITE = "write"

TOTAL = "total"
FORWARDED = "forwarded"
DROPPED = "dropped"

# Extra counters
BAD_RECORDS = "bad_records"  # read: unparseable JSON in a metadata record (as dropped_bad_records)
NON_HTTP_LINKS = "non_http_links"  # extract: data:, javascript:, ... image links (not candidates)
SAMPLES_WRITTEN = "samples_written"  # write: kept samples committed to tars


def namespace(stage: str) -> str:
    return f"{NAMESPACE}.{stage}"


def dropped_name(status: str) -> str:
    return f"{DROPPED}_{status}"


class StageCounters:
    """The counters of one stage; create in a DoFn's ``__init__`` or ``setup``."""

    def __init__(self, stage: str) -> None:
        self._namespace = namespace(stage)
        self.total = Metrics.counter(self._namespace, TOTAL)
        self.forwarded = Metrics.counter(self._namespace, FORWARDED)
        self.dropped = Metrics.counter(self._namespace, DROPPED)

    def counter(self, name: str):
        return Metrics.counter(self._namespace, name)

    def drop(self, status: str) -> None:
        self.dropped.inc()
        Metrics.counter(self._namespace, dropped_name(status)).inc()
