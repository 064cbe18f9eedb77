"""The ExtractPairs step: read each shard and number its candidate pairs.

The per-record rules live in pure modules (``wat_pairs`` for WAT JSON, ``pairs`` for the
URL and caption rules shared by every input kind); this module only reads and numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from clipcrawl.io.wat import iter_wat_metadata
from clipcrawl.transforms import metrics
from clipcrawl.transforms.pairs import BadRecordError, Pair
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.wat_pairs import extract_pairs, parse_wat_json

_LOG = logging.getLogger(__name__)

SAMPLES = "samples"
SHARD_ERRORS = "shard_errors"


def number_pairs(shard_no: int, source: str, pairs: Iterable[Pair]) -> Iterator[Sample]:
    """Pending samples keyed ``{shard:06d}{ordinal:07d}`` in extraction order."""
    for ordinal, pair in enumerate(pairs):
        yield Sample(
            key=sample_key(shard_no, ordinal),
            shard_no=shard_no,
            url=pair.url,
            caption=pair.caption,
            page_url=pair.page_url,
            source=source,
        )


class _ExtractShardFn(beam.DoFn):
    """Reads one shard's WAT records and numbers its pairs (one shard per call: keys stay dense).

    A shard that cannot be read (missing file, corrupt gzip) is not an exception for the
    job: its ``(shard_no, message)`` goes to the ``errors`` output and the writer records
    the shard as failed, while the other shards finish.
    """

    def __init__(self) -> None:
        self._read = metrics.StageCounters(metrics.READ)
        self._extract = metrics.StageCounters(metrics.EXTRACT)

    def process(self, shard: tuple[int, str]) -> Iterator[Any]:
        shard_no, uri = shard
        try:
            yield from number_pairs(shard_no, uri, self._pairs_of(uri))
        except Exception as error:  # noqa: BLE001 - any read failure fails this shard only
            message = f"cannot read {uri}: {type(error).__name__}: {error}"
            _LOG.error("shard %06d: %s", shard_no, message)
            yield beam.pvalue.TaggedOutput(SHARD_ERRORS, (shard_no, message))

    def _pairs_of(self, uri: str) -> Iterator[Pair]:
        for record in iter_wat_metadata(uri):
            self._read.total.inc()
            try:
                pairs, stats = extract_pairs(parse_wat_json(record.payload), record.target_uri)
            except BadRecordError as error:
                self._read.drop(metrics.BAD_RECORDS)
                _LOG.warning("%s: skipped record %s: %s", uri, record.record_id, error)
                continue
            self._read.forwarded.inc()
            self._extract.counter(metrics.NON_HTTP_LINKS).inc(stats.non_http_links)
            self._extract.forwarded.inc(len(pairs))
            yield from pairs


class ExtractPairs(beam.PTransform):
    """``(shard_no, uri)`` shards -> pending ``Sample`` candidates, one per image link with alt.

    Returns a ``DoOutputsTuple``: the main output is the samples, ``SHARD_ERRORS`` holds
    ``(shard_no, message)`` for shards that could not be read.
    """

    def expand(self, shards: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            shards
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadAndExtract" >> beam.ParDo(_ExtractShardFn()).with_outputs(SHARD_ERRORS, main=SAMPLES)
        )
