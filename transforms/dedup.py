"""Exact de-duplication of (url, caption) within a shard, the Beam way (group by key)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam

from clipcrawl.transforms import metrics
from clipcrawl.transforms.routing import OnPending
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status

DedupKey = tuple[int, str, str]


def dedup_key(sample: Sample) -> DedupKey:
    return (sample.shard_no, sample.url, sample.caption)


def mark_duplicates(samples: Iterable[Sample]) -> list[Sample]:
    """The first sample by key stays pending; the others become ``duplicate`` rows naming it.

    "First" is the lowest key, i.e. extraction order, so the choice is the same on every run
    and every runner, whatever order the group arrives in.
    """
    ordered = sorted(samples, key=lambda sample: sample.key)
    first = ordered[0]
    return [first] + [
        sample.reject(Status.DUPLICATE, f"same url and caption as {first.key}") for sample in ordered[1:]
    ]


class _MarkDuplicatesFn(beam.DoFn):
    def __init__(self) -> None:
        self._counters = metrics.StageCounters(metrics.DEDUP)

    def process(self, group: tuple[DedupKey, Iterable[Sample]]) -> Iterator[Sample]:
        _, samples = group
        for sample in mark_duplicates(samples):
            self._counters.total.inc()
            if sample.pending:
                self._counters.forwarded.inc()
            else:
                self._counters.drop(sample.status)
            yield sample


class _MarkDuplicates(beam.PTransform):
    def expand(self, pending: beam.PCollection) -> beam.PCollection:
        return (
            pending
            | "KeyByPair" >> beam.Map(lambda sample: (dedup_key(sample), sample))
            | "GroupByPair" >> beam.GroupByKey()
            | "MarkDuplicates" >> beam.ParDo(_MarkDuplicatesFn())
        )


class DedupWithinShard(beam.PTransform):
    """Pending candidates grouped by (shard, url, caption); rejected rows pass through."""

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        return samples | "PendingOnly" >> OnPending(_MarkDuplicates())
