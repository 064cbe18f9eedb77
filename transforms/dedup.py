"""Exact de-duplication of candidates across every shard of a run, the Beam way.

Two passes, both shuffles that scale on Dataflow: a ``CombinePerKey(min)`` finds the
winning (lowest) sample key of each group — partial combining happens before the shuffle,
so a URL seen a million times costs a million small keys, not a million samples in one
worker's memory — and a ``CoGroupByKey`` then streams each group past its winner, marking
the others ``duplicate``. The lowest key is extraction order (shard, then position), so
the same sample wins on every run and every runner.

Scope: the shards of one run. A shard done in an earlier run is not re-read, so a rerun of
a single shard is de-duplicated only within that run's shards (README: "Dedup").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from clipcrawl.transforms import metrics
from clipcrawl.transforms.routing import OnPending
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status

DEDUP_KEYS = ("url_caption", "url", "none")
DEDUP_SCOPES = ("run", "shard")


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """What counts as the same candidate (``key``) and how far apart duplicates may be (``scope``)."""

    key: str = "url_caption"
    scope: str = "run"

    def __post_init__(self) -> None:
        if self.key not in DEDUP_KEYS:
            raise ValueError(f"dedup key must be one of {', '.join(DEDUP_KEYS)}, got {self.key!r}")
        if self.scope not in DEDUP_SCOPES:
            raise ValueError(f"dedup scope must be one of {', '.join(DEDUP_SCOPES)}, got {self.scope!r}")


def dedup_key(sample: Sample, config: DedupConfig) -> tuple[Any, ...]:
    """The identity a duplicate shares; samples without a URL (re-scored tars) are never merged."""
    if not sample.url:
        return ("no-url", sample.key)
    identity: tuple[Any, ...] = (sample.url,) if config.key == "url" else (sample.url, sample.caption)
    return (sample.shard_no, *identity) if config.scope == "shard" else identity


def mark_against(winner: str, sample: Sample, config: DedupConfig) -> Sample:
    """The sample unchanged when it is the winner, else a ``duplicate`` row naming the winner."""
    if sample.key == winner:
        return sample
    what = "url" if config.key == "url" else "url and caption"
    return sample.reject(Status.DUPLICATE, f"same {what} as {winner}")


class _MarkFn(beam.DoFn):
    def __init__(self, config: DedupConfig) -> None:
        self._config = config
        self._counters = metrics.StageCounters(metrics.DEDUP)

    def process(self, group: tuple[Any, dict[str, Iterable[Any]]]) -> Iterator[Sample]:
        _, parts = group
        (winner,) = parts["winner"]
        for sample in parts["samples"]:  # streamed: the group is never held in memory
            marked = mark_against(winner, sample, self._config)
            self._counters.total.inc()
            if marked.pending:
                self._counters.forwarded.inc()
            else:
                self._counters.drop(marked.status)
            yield marked


class _MarkDuplicates(beam.PTransform):
    def __init__(self, config: DedupConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pending: beam.PCollection) -> beam.PCollection:
        config = self._config
        keyed = pending | "KeyByIdentity" >> beam.Map(lambda sample: (dedup_key(sample, config), sample))
        winners = (
            keyed
            | "SampleKeys" >> beam.MapTuple(lambda identity, sample: (identity, sample.key))
            | "LowestKey" >> beam.CombinePerKey(min)
        )
        return (
            {"samples": keyed, "winner": winners}
            | "JoinWinner" >> beam.CoGroupByKey()
            | "MarkDuplicates" >> beam.ParDo(_MarkFn(config))
        )


class Dedup(beam.PTransform):
    """Pending candidates de-duplicated by ``DedupConfig``; rows already rejected pass through."""

    def __init__(self, config: DedupConfig | None = None) -> None:
        super().__init__()
        self._config = config or DedupConfig()

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        if self._config.key == "none":
            return samples
        return samples | "PendingOnly" >> OnPending(_MarkDuplicates(self._config))
