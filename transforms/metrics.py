"""Beam metric names, fixed in one place (namespace per stage; total/forwarded/dropped_*).

Every stage counts what it receives (``total``), what it passes on for more work
(``forwarded``) and what it ends early (``dropped`` plus ``dropped_{status}``). Queries in
tests and dashboards use these constants, never string literals. They are plain Beam
counters, so every runner reports them.

Beam reports counters only when a local run ends, so for the DirectRunner's progress display
(``pipelines/progress.py``) each process can also mirror its increments into a small JSON
file in a directory the launcher names (``CLIPCRAWL_PROGRESS_DIR``, inherited by the worker
processes); a background thread writes the file twice a second. Without that directory the
mirror costs one global lookup per increment.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import uuid

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
ROWS_WRITTEN = "rows_written"  # write: parquet rows committed (every candidate of a done shard)
LEASE_LOST = "lease_lost"  # write (as dropped_lease_lost): the shard's lease was taken over before it was marked

STAGES = (READ, EXTRACT, FILTER, DEDUP, DOWNLOAD, SCORE, WRITE)

PROGRESS_DIR_ENV = "CLIPCRAWL_PROGRESS_DIR"
_FLUSH_SECONDS = 0.5


def namespace(stage: str) -> str:
    return f"{NAMESPACE}.{stage}"


def dropped_name(status: str) -> str:
    return f"{DROPPED}_{status}"


def counter_key(stage: str, name: str) -> str:
    """``clipcrawl.{stage}/{name}``: how mirrored counts (and the progress display) name a counter."""
    return f"{namespace(stage)}/{name}"


class _Mirror:
    """This process's running totals of clipcrawl counters, rewritten to one file now and then."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._path = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._dirty = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="clipcrawl-progress-mirror", daemon=True)
        self._thread.start()

    def add(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n
            self._dirty = True

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            snapshot, self._dirty = dict(self._counts), False
        partial = f"{self._path}.tmp"
        with open(partial, "w", encoding="utf-8") as sink:
            json.dump(snapshot, sink)
        os.replace(partial, self._path)  # readers never see half a file

    def _loop(self) -> None:
        while not self._stop.wait(_FLUSH_SECONDS):
            try:
                self.flush()
            except OSError:  # the launcher removed the directory: the run is over
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.flush()
        except OSError:
            pass


_mirror: _Mirror | None = None


def mirror_counts(directory: str | None) -> None:
    """Mirror this process's increments into ``directory`` from now on; ``None`` stops (and flushes)."""
    global _mirror
    if _mirror is not None:
        _mirror.close()
    _mirror = _Mirror(directory) if directory else None


class _Counter:
    """A Beam counter that also tells this process's progress mirror, when there is one."""

    def __init__(self, namespace_: str, name: str) -> None:
        self._key = f"{namespace_}/{name}"
        self._counter = Metrics.counter(namespace_, name)

    def inc(self, n: int = 1) -> None:
        self._counter.inc(n)
        mirror = _mirror
        if mirror is not None:
            mirror.add(self._key, n)


class StageCounters:
    """The counters of one stage; create in a DoFn's ``__init__`` or ``setup``."""

    def __init__(self, stage: str) -> None:
        self._namespace = namespace(stage)
        self.total = _Counter(self._namespace, TOTAL)
        self.forwarded = _Counter(self._namespace, FORWARDED)
        self.dropped = _Counter(self._namespace, DROPPED)
        self._by_name: dict[str, _Counter] = {}

    def counter(self, name: str) -> _Counter:
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = _Counter(self._namespace, name)
        return found

    def drop(self, status: str) -> None:
        self.dropped.inc()
        self.counter(dropped_name(status)).inc()


def _flush_at_exit() -> None:
    if _mirror is not None:
        _mirror.close()


# A worker process started by the DirectRunner for a run with a progress display.
if os.environ.get(PROGRESS_DIR_ENV):
    mirror_counts(os.environ[PROGRESS_DIR_ENV])
    atexit.register(_flush_at_exit)  # a worker's last counts, when it ends normally
