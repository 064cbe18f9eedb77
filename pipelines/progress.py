"""Live progress for local runs: shards, pairs and their rates on stderr while the job runs.

``FnApiRunner``'s ``pipeline.run()`` blocks until the end, the work happens in worker
processes, and Beam reports counters only when the pipeline is done. So for the length of the
run each process mirrors its stage counters into a small JSON file in a temporary directory
(``transforms/metrics.py``; the workers find it through ``CLIPCRAWL_PROGRESS_DIR``, which they
inherit), and rich's refresh thread in the launcher sums those files twice a second. The last
frame shows Beam's own committed counters. Shown only on a terminal and when ``CI`` is not set
(``--progress=on`` / ``off`` override); remote runners have their own consoles and get none.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import apache_beam as beam

from clipcrawl.transforms import metrics
from clipcrawl.transforms.metrics import counter_key

MODES = ("auto", "on", "off")
# Runners whose workers run on this machine and inherit its environment.
LOCAL_RUNNERS = frozenset(
    {"DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "PrismRunner", "TestDirectRunner"}
)
REFRESH_PER_SECOND = 2

SHARDS_DONE = counter_key(metrics.WRITE, metrics.FORWARDED)
SHARDS_FAILED = counter_key(metrics.WRITE, metrics.DROPPED)
SHARDS_SEEN = counter_key(metrics.WRITE, metrics.TOTAL)
DOWNLOADS_TRIED = counter_key(metrics.DOWNLOAD, metrics.TOTAL)
# (label, counter) of the sample rows, in pipeline order.
ROWS = (
    ("pairs extracted", counter_key(metrics.EXTRACT, metrics.FORWARDED)),
    ("images downloaded", counter_key(metrics.DOWNLOAD, metrics.FORWARDED)),
    ("pairs scored", counter_key(metrics.SCORE, metrics.TOTAL)),
    ("pairs kept", counter_key(metrics.SCORE, metrics.FORWARDED)),
    ("rows written", counter_key(metrics.WRITE, metrics.ROWS_WRITTEN)),
)


def wanted(mode: str, runner: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether to draw: never for remote runners; ``auto`` only on a terminal outside CI."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
    if mode == "off" or runner not in LOCAL_RUNNERS:
        return False
    if mode == "on":
        return True
    return bool(stream.isatty()) and not environ.get("CI")


def read_counts(directory: str) -> dict[str, int]:
    """The sum of every process's mirrored counters (a file being replaced is read whole or skipped)."""
    totals: collections.Counter[str] = collections.Counter()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return {}
    for entry in entries:
        if not entry.name.endswith(".json"):
            continue
        try:
            with open(entry.path, encoding="utf-8") as source:
                totals.update(json.load(source))
        except (OSError, ValueError):
            continue
    return dict(totals)


def committed_counts(result: Any) -> dict[str, int] | None:
    """Beam's final clipcrawl counters of a finished run, keyed like the mirror's; None if unavailable."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter())["counters"]
    except Exception:  # noqa: BLE001 - a runner without metrics support only loses the final numbers
        return None
    totals: collections.Counter[str] = collections.Counter()
    for item in found:
        name = item.key.metric
        if name.namespace.startswith(metrics.NAMESPACE + "."):
            totals[f"{name.namespace}/{name.name}"] += int(item.committed or 0)
    return dict(totals)


class RateMeter:
    """Items per second of one counter: over the last ``window`` seconds while it moves, else
    over the span in which it moved (so a stage that finished keeps its real throughput)."""

    def __init__(self, window: float = 10.0) -> None:
        self._window = window
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._zero_at: float | None = None  # the last time the count was still 0
        self._started: float | None = None
        self._changed: float | None = None
        self._count = 0

    def update(self, now: float, count: int) -> None:
        if count <= 0:
            self._zero_at = now
            return
        if self._started is None:
            self._started = self._zero_at if self._zero_at is not None else now
        if count != self._count:
            self._changed, self._count = now, count
        self._samples.append((now, count))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()

    def rate(self) -> float | None:
        if self._started is None or self._changed is None:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        if self._changed > t1 - self._window and t1 - t0 >= 1.0 and c1 > c0:
            return (c1 - c0) / (t1 - t0)
        span = self._changed - self._started
        return self._count / span if span > 0 else None


def _format_rate(rate: float | None, unit: str = "s") -> str:
    if rate is None:
        return ""
    return f"{rate:,.0f}/{unit}" if rate >= 100 else f"{rate:.1f}/{unit}"


def shard_rate(finished: int, elapsed: float) -> float | None:
    """Shards finished per second since the run started.

    Averaged over the whole run rather than a recent window: shards finish seconds to hours
    apart, so a window of seconds would mostly read zero.
    """
    return finished / elapsed if finished and elapsed > 0 else None


def format_shard_rate(per_second: float | None) -> str:
    """Per second, minute or hour: the first unit in which at least one shard finishes."""
    if per_second is None:
        return ""
    if per_second >= 1:
        return _format_rate(per_second)
    if per_second * 60 >= 1:
        return _format_rate(per_second * 60, "min")
    return _format_rate(per_second * 3600, "h")


def render(counts: Mapping[str, int], shards: int, meters: Mapping[str, RateMeter], elapsed: float) -> Any:
    """One frame: a shard bar with shard rate and elapsed time, then one line per stage with count and rate."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    done, failed = counts.get(SHARDS_DONE, 0), counts.get(SHARDS_FAILED, 0)
    minutes, seconds = divmod(int(elapsed), 60)
    header = Table.grid(padding=(0, 1))
    header.add_row(
        "[bold]clipcrawl[/]",
        f"shards {done + failed}/{shards}" + (f" ([red]{failed} failed[/])" if failed else ""),
        ProgressBar(total=max(shards, 1), completed=done + failed, width=30),
        format_shard_rate(shard_rate(done + failed, elapsed)),
        f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}",
    )
    lines = Table.grid(padding=(0, 2))
    lines.add_column(style="cyan")
    lines.add_column(justify="right")
    lines.add_column(justify="right")
    lines.add_column(style="dim")
    for label, key in ROWS:
        note = f"of {counts.get(DOWNLOADS_TRIED, 0):,} tried" if key.startswith(metrics.namespace(metrics.DOWNLOAD)) else ""
        lines.add_row(f"  {label}", f"{counts.get(key, 0):,}", _format_rate(meters[key].rate()), note)
    return Group(header, lines)


class LiveProgress:
    """rich's live display over the mirrored counters of one run."""

    def __init__(self, directory: str, shards: int, force_terminal: bool = False, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._directory = directory
        self._shards = shards
        self._meters = {key: RateMeter() for _, key in ROWS}
        self._final: dict[str, int] | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()
        console = Console(file=stream or sys.stderr, force_terminal=force_terminal or None)
        self._live = Live(console=console, refresh_per_second=REFRESH_PER_SECOND, get_renderable=self._frame)

    def _frame(self) -> Any:
        with self._lock:
            counts = self._final if self._final is not None else read_counts(self._directory)
            now = time.monotonic()
            for _, key in ROWS:
                self._meters[key].update(now, counts.get(key, 0))
            return render(counts, self._shards, self._meters, now - self._started)

    def __enter__(self) -> LiveProgress:
        self._live.start(refresh=True)
        return self

    def finish(self, counts: Mapping[str, int] | None) -> None:
        """Show these (Beam's committed) counts in the last frame instead of the mirrored ones."""
        if counts is not None:
            with self._lock:
                self._final = {**read_counts(self._directory), **counts}

    def __exit__(self, *exc: object) -> None:
        self._live.stop()  # draws the last frame and leaves it on screen


def run_with_progress(pipeline: beam.Pipeline, mode: str, shards: int) -> Any:
    """``pipeline.run().wait_until_finish()``, with the live display when ``wanted``; the result."""
    run = pipeline.run
    if not wanted(mode, type(pipeline.runner).__name__, sys.stderr, os.environ):
        result = run()
        result.wait_until_finish()
        return result
    with tempfile.TemporaryDirectory(prefix="clipcrawl-progress-", ignore_cleanup_errors=True) as directory:
        previous = os.environ.get(metrics.PROGRESS_DIR_ENV)
        os.environ[metrics.PROGRESS_DIR_ENV] = directory  # worker processes inherit it
        metrics.mirror_counts(directory)  # stages running in this process (in_memory, threads)
        try:
            with LiveProgress(directory, shards, force_terminal=mode == "on") as display:
                result = run()
                result.wait_until_finish()
                display.finish(committed_counts(result))
        finally:
            metrics.mirror_counts(None)
            if previous is None:
                os.environ.pop(metrics.PROGRESS_DIR_ENV, None)
            else:
                os.environ[metrics.PROGRESS_DIR_ENV] = previous
    return result
