"""DownloadImages: fetch each pending candidate's image, politely and safely, and resize it.

Per-record logic is a plain function (``download_sample``) testable without Beam, over a
``Fetcher`` (guarded session, per-host gate, robots.txt cache); ``status_for`` is the one
place an exception becomes a row status. The DoFn owns the Fetcher and a thread pool that
overlaps the network waits of a batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import http.client
import itertools
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue
import requests
import urllib3.exceptions

from clipcrawl.io import faults
from clipcrawl.transforms.address_guard import BlockedAddressError
from clipcrawl.transforms.download_config import DEFAULT_USER_AGENT, DownloadConfig
from clipcrawl.transforms.fetch import Fetcher, FetchError, FetchFacts, origin_of
from clipcrawl.transforms.image_processing import ImageError, process_image
from clipcrawl.transforms.metrics import DOWNLOAD, StageCounters
from clipcrawl.transforms.politeness import HostBusyError, robots_tag_opt_out
from clipcrawl.transforms.routing import OnPending
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status

__all__ = [
    "DEFAULT_USER_AGENT", "DownloadConfig", "DownloadImages", "FetchError", "Fetcher", "download_sample",
    "robots_tag_opt_out", "status_for",
]

# Exceptions a bad URL or a bad response can raise; anything else is a bug and propagates.
_EXPECTED_ERRORS = (
    FetchError,
    BlockedAddressError,
    HostBusyError,
    ImageError,
    requests.RequestException,
    urllib3.exceptions.HTTPError,  # raised by raw reads, which requests does not wrap
    http.client.HTTPException,
    OSError,  # socket errors
)


def status_for(exc: BaseException) -> tuple[Status, str]:
    """The one place an exception becomes a row's status and error message."""
    if isinstance(exc, (FetchError, ImageError)):
        return exc.status, str(exc)
    if isinstance(exc, BlockedAddressError):
        return Status.BLOCKED_ADDRESS, str(exc)
    if isinstance(exc, HostBusyError):
        return Status.RATE_LIMITED, str(exc)
    return Status.FAILED_TO_DOWNLOAD, f"{type(exc).__name__}: {_root_cause(exc)}"


def _root_cause(exc: BaseException) -> BaseException | str:
    """requests wraps urllib3's MaxRetryError around the real reason; show the reason."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError) and reason.reason is not None:
        return reason.reason
    return exc


def download_sample(fetcher: Fetcher, sample: Sample) -> Sample:
    """The sample with its stored image (still pending: scoring decides), or rejected.

    A sample that already carries an image (re-scoring existing WebDataset tars) passes
    through untouched: it is still pending, and fetching it again would be wasted traffic.
    """
    if sample.image is not None:
        return sample
    facts = FetchFacts()
    try:
        body = fetcher.fetch(sample.url, facts)
        image = process_image(body, fetcher.config.image_spec)
    except _EXPECTED_ERRORS as exc:
        status, message = status_for(exc)
        return dataclasses.replace(sample, **dataclasses.asdict(facts)).reject(status, message)
    return dataclasses.replace(
        sample,
        **dataclasses.asdict(facts),
        image=image.data,
        image_format=image.format,
        width=image.width,
        height=image.height,
        original_width=image.original_width,
        original_height=image.original_height,
        sha256=image.sha256,
    )


def interleave_by_host(samples: list[Sample]) -> list[int]:
    """Indexes of ``samples`` taking one per host in turn.

    Threads pick work in this order, so a batch crowded onto one host does not park every
    thread behind that host's politeness limits while other hosts wait.
    """
    queues: dict[str, collections.deque[int]] = collections.defaultdict(collections.deque)
    for index, sample in enumerate(samples):
        try:
            key = origin_of(sample.url)
        except FetchError:
            key = ""
        queues[key].append(index)
    order: list[int] = []
    for round_ in itertools.zip_longest(*queues.values()):
        order.extend(index for index in round_ if index is not None)
    return order


class _DownloadBatchFn(beam.DoFn):
    """Downloads pending samples on a thread pool, with downloads in flight across batches.

    Waiting for a whole batch would let one slow server (up to ``total_timeout``) hold up
    every other image of its batch, and a crawl has a slow server in almost every batch. So
    ``process`` only submits, hands on what has finished, and waits only while more than
    ``max_in_flight`` are running; ``finish_bundle`` hands on the rest. Results keep their
    element's timestamp and window. Counting happens in the bundle thread, where Beam's
    metrics count.
    """

    def __init__(self, config: DownloadConfig, max_in_flight: int | None = None) -> None:
        self._config = config
        self._max_in_flight = max_in_flight if max_in_flight is not None else config.threads * 4

    def setup(self) -> None:
        self._fetcher = Fetcher(self._config)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._config.threads, thread_name_prefix="clipcrawl-download"
        )
        self._counters = StageCounters(DOWNLOAD)

    def start_bundle(self) -> None:
        self._in_flight: dict[concurrent.futures.Future, tuple[Any, Any]] = {}

    def process(
        self, batch: list[Sample], timestamp: Any = beam.DoFn.TimestampParam, window: Any = beam.DoFn.WindowParam
    ) -> Iterator[Any]:
        faults.point("download.batch_before")
        for index in interleave_by_host(batch):
            future = self._executor.submit(download_sample, self._fetcher, batch[index])
            self._in_flight[future] = (timestamp, window)
        yield from self._hand_on(keep=self._max_in_flight)
        faults.point("download.batch_after")

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._hand_on(keep=0)
        faults.point("download.bundle_finished")

    def _hand_on(self, keep: int) -> Iterator[WindowedValue]:
        """Every finished download; waits for more to finish while over ``keep`` are running."""
        while True:
            done = [future for future in self._in_flight if future.done()]
            if not done and len(self._in_flight) > keep:
                concurrent.futures.wait(self._in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                continue
            if not done:
                return
            for future in done:
                timestamp, window = self._in_flight.pop(future)
                result = future.result()
                self._counters.total.inc()
                if result.pending:
                    self._counters.forwarded.inc()
                else:
                    self._counters.drop(result.status)
                yield WindowedValue(result, timestamp, [window])

    def teardown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._fetcher.close()


class DownloadImages(beam.PTransform):
    """Pending samples get their image (or a rejection); all others pass through untouched."""

    def __init__(self, config: DownloadConfig | None = None) -> None:
        super().__init__()
        self._config = config or DownloadConfig()

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        batch = beam.BatchElements(min_batch_size=1, max_batch_size=self._config.threads * 4)
        download = beam.ParDo(_DownloadBatchFn(self._config))
        return samples | "OnPending" >> OnPending("Batch" >> batch | "Download" >> download)
