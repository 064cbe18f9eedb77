"""``clipcrawl run --watch DIR_OR_URL``: a hot folder, processed in successive batch runs.

Each cycle lists the folder, registers the input files that have appeared (and finished
growing, ``io/hot_folder.py``), and runs one ordinary batch (``build_dataset.run_batch``)
over every file seen so far: the ledger skips done shards, so nothing is ever redone, and
shards whose lease lapsed or that failed with attempts left are picked up again. The first
SIGINT/SIGTERM lets the batch in flight finish and then stops; a second one aborts the batch
(its shards are released to pending). ``--watch_cycles N`` bounds the loop (tests, cron).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

_LOG = logging.getLogger(__name__)
EXIT_ABORTED = 130

CycleHook = Callable[[int, Any, float], None]  # (cycle number, RunSummary or None, seconds) after each batch


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM sets ``stop``; a second one raises KeyboardInterrupt (abort the batch)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread; the caller owns ``stop``
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def handle(number: int, _frame: Any) -> None:
        if stop.is_set():
            for each, handler in previous.items():
                signal.signal(each, handler)
            raise KeyboardInterrupt(f"second {signal.Signals(number).name}")
        stop.set()
        _LOG.warning("%s: stopping after the current batch (send it again to abort the batch)",
                     signal.Signals(number).name)

    for number in previous:
        signal.signal(number, handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def watch(argv: Sequence[str], on_cycle: CycleHook | None = None, stop: threading.Event | None = None) -> list[Any]:
    """Run ``--watch`` cycles until stopped or ``--watch_cycles`` is reached; the summaries, in order."""
    import time

    from clipcrawl.io.coordinator import mask_secrets
    from clipcrawl.io.hot_folder import HotFolder
    from clipcrawl.pipelines import build_dataset
    from clipcrawl.pipelines.options import OptionsError, resolve_config

    options = PipelineOptions(build_dataset.with_local_defaults(list(argv)))
    config = resolve_config(options)
    if config.watch is None:
        raise OptionsError("--watch DIR_OR_URL is required for watch mode")
    folder = HotFolder(config.watch.source, any_kind=config.extract.input_format != "auto")
    fixed = build_dataset.shard_uris(config)  # --input / --input_manifest, if given too
    stop = stop if stop is not None else threading.Event()
    seen: set[str] = set()
    summaries: list[Any] = []
    with stop_on_signals(stop):
        cycle = 0
        while not stop.is_set():
            cycle += 1
            started = time.monotonic()
            new = folder.settled(seen, config.watch.settle, stop)
            seen.update(new)
            if new:
                _LOG.info("watch cycle %d: %d new file(s) in %s", cycle, len(new), folder.source)
            try:
                summary = build_dataset.run_batch(options, config, fixed + sorted(seen))
            except Exception as error:  # one bad batch (or a ledger outage) must not end the watch
                _LOG.error("watch cycle %d failed: %s: %s", cycle, type(error).__name__,
                           mask_secrets(str(error), config.writer.coordinator_url))
                summary = None
            if summary is not None:
                summaries.append(summary)
            if on_cycle is not None:
                on_cycle(cycle, summary, time.monotonic() - started)
            if config.watch.cycles and cycle >= config.watch.cycles:
                break
            stop.wait(config.watch.interval)
    return summaries


def main(argv: Sequence[str]) -> int:
    """``clipcrawl run --watch ...``: print each cycle's summary; 0 on a clean stop."""
    from clipcrawl.pipelines.cli import _print_summary

    def report(cycle: int, summary: Any, seconds: float) -> None:
        if summary is not None and (summary.shards_processed or cycle == 1):
            print(f"--- watch cycle {cycle}", flush=True)
            _print_summary(summary, seconds)

    try:
        summaries = watch(argv, on_cycle=report)
    except KeyboardInterrupt:
        print("watch aborted")
        return EXIT_ABORTED
    last = summaries[-1] if summaries else None
    return 0 if last is None or last.ledger["shards"]["failed"] == 0 else 1
