"""WriteShards: per input shard, tar part(s) of kept samples + a parquet of every row + stats.

Files go to a temporary name and are committed by rename; stale tar parts from an earlier
run of the same shard are removed; only then is the shard marked done in the coordinator.
Names derive from ``shard_no``, so a redone shard overwrites and never duplicates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import fsspec
from fsspec.core import url_to_fs

from clipcrawl.io import parquet
from clipcrawl.io.coordinator import Coordinator, ShardCounts
from clipcrawl.io.shard_stats import shard_stats
from clipcrawl.transforms import metrics
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import FINAL_STATUSES, Status

_LOG = logging.getLogger(__name__)

# Tar members get this fixed mtime so the same samples always make the same bytes.
_TAR_MTIME = 0.0


@dataclasses.dataclass(frozen=True)
class WriterConfig:
    output_dir: str
    coordinator_url: str
    samples_per_part: int = 10_000

    def __post_init__(self) -> None:
        if self.samples_per_part < 1:
            raise ValueError(f"samples_per_part must be >= 1, got {self.samples_per_part}")


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """What the writer did with one shard: the pipeline's single leaf collects these."""

    shard_no: int
    uri: str
    done: bool
    counts: ShardCounts | None = None
    files: tuple[str, ...] = ()
    error: str | None = None


def shard_prefix(shard_no: int) -> str:
    return f"{shard_no:06d}"


def tar_name(shard_no: int, part: int) -> str:
    return f"{shard_prefix(shard_no)}_{part:02d}.tar"


def parquet_name(shard_no: int) -> str:
    return f"{shard_prefix(shard_no)}.parquet"


def stats_name(shard_no: int) -> str:
    return f"{shard_prefix(shard_no)}_stats.json"


def check_final(samples: Iterable[Sample]) -> None:
    """Every row must have ended with a documented status; anything else is a pipeline bug."""
    for sample in samples:
        if sample.status not in FINAL_STATUSES:
            raise RuntimeError(f"sample {sample.key} reached the writer with status {sample.status!r}")


def write_shard(
    config: WriterConfig,
    shard_no: int,
    uri: str,
    samples: Sequence[Sample],
    read_report: dict[str, Any] | None = None,
) -> ShardResult:
    """Write and commit one shard's files; returns what was written (does not touch the ledger).

    ``read_report`` (records read, bad records by kind) goes into the stats file as ``read``.
    """
    started = time.monotonic()
    check_final(samples)
    rows = sorted(samples, key=lambda sample: sample.key)
    kept = [sample for sample in rows if sample.status == Status.SUCCESS]
    fs, root = url_to_fs(config.output_dir)
    fs.makedirs(root, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    staged: dict[str, str] = {}  # final path -> temporary path

    def stage(name: str) -> Any:
        final = posixpath.join(root, name)
        staged[final] = f"{posixpath.join(root, '.' + name)}.{token}.tmp"
        return fs.open(staged[final], "wb")

    parts = [kept[i : i + config.samples_per_part] for i in range(0, len(kept), config.samples_per_part)]
    for part_no, part in enumerate(parts):
        with stage(tar_name(shard_no, part_no)) as sink:
            _write_tar(part, sink)
    with stage(parquet_name(shard_no)) as sink:
        parquet.write_rows([sample.metadata() for sample in rows], sink)
    tar_bytes = sum(fs.size(tmp) for final, tmp in staged.items() if final.endswith(".tar"))
    stats = shard_stats(shard_no, uri, rows, tar_bytes=tar_bytes, write_seconds=time.monotonic() - started)
    stats["read"] = read_report or {}
    with stage(stats_name(shard_no)) as sink:
        sink.write(json.dumps(stats, indent=2, sort_keys=True).encode("utf-8"))

    for final, tmp in staged.items():
        fs.mv(tmp, final)
    _remove_stale_parts(fs, root, shard_no, keep=set(staged))
    counts = ShardCounts(
        pairs_extracted=len(rows),
        images_ok=sum(1 for sample in rows if sample.sha256 is not None),
        pairs_kept=len(kept),
        bytes_written=sum(fs.size(final) for final in staged),
    )
    return ShardResult(shard_no, uri, done=True, counts=counts, files=tuple(sorted(staged)))


def _write_tar(samples: Sequence[Sample], sink: Any) -> None:
    import webdataset  # imports torch: keep it off the CLI's import path

    writer = webdataset.TarWriter(sink, mtime=_TAR_MTIME, encoder=False)
    for sample in samples:
        writer.write(
            {
                "__key__": sample.key,
                sample.image_format: sample.image,
                "txt": sample.caption.encode("utf-8"),
                "json": json.dumps(sample.metadata(), sort_keys=True).encode("utf-8"),
            }
        )
    writer.close()


def _remove_stale_parts(fs: fsspec.AbstractFileSystem, root: str, shard_no: int, keep: set[str]) -> None:
    """Tar parts this shard had before (a rerun that keeps fewer samples) must not survive."""
    for path in fs.glob(posixpath.join(root, f"{shard_prefix(shard_no)}_[0-9][0-9].tar")):
        if path not in keep and fs.unstrip_protocol(path) not in keep:
            fs.rm(path)


class _WriteShardFn(beam.DoFn):
    """Writes each shard's group, then marks it done (or failed) in the coordinator."""

    def __init__(self, config: WriterConfig) -> None:
        self._config = config
        self._counters = metrics.StageCounters(metrics.WRITE)

    def setup(self) -> None:
        self._coordinator = Coordinator(self._config.coordinator_url)

    def process(self, group: tuple[int, dict[str, Iterable[Any]]]) -> Iterator[ShardResult]:
        shard_no, parts = group
        (uri,) = list(parts["shard"])
        errors = list(parts["errors"])
        samples = list(parts["samples"])
        reads = list(parts.get("reads", ()))
        self._counters.total.inc()
        if errors:
            message = "; ".join(errors)
            _LOG.error("shard %06d (%s) failed: %s", shard_no, uri, message)
            self._coordinator.fail([shard_no], message)
            self._counters.drop("failed")
            yield ShardResult(shard_no, uri, done=False, error=message)
            return
        result = write_shard(self._config, shard_no, uri, samples, reads[0] if reads else None)
        self._coordinator.complete(shard_no, result.counts)
        self._counters.forwarded.inc()
        self._counters.counter(metrics.SAMPLES_WRITTEN).inc(result.counts.pairs_kept)
        yield result

    def teardown(self) -> None:
        coordinator = getattr(self, "_coordinator", None)
        if coordinator is not None:
            coordinator.close()


class WriteShards(beam.PTransform):
    """``{"shards", "samples", "errors", "reads"}`` (reads optional) -> one ShardResult per shard.

    Shards with no samples still arrive (through the ``shard`` side of the join), so a shard
    with zero pairs is written and marked done like any other.
    """

    def __init__(self, config: WriterConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, inputs: dict[str, beam.PCollection]) -> beam.PCollection:
        keyed_samples = inputs["samples"] | "KeyByShard" >> beam.Map(lambda sample: (sample.shard_no, sample))
        groups = {"shard": inputs["shards"], "samples": keyed_samples, "errors": inputs["errors"]}
        if "reads" in inputs:
            groups["reads"] = inputs["reads"]
        return (
            groups
            | "GroupByShard" >> beam.CoGroupByKey()
            | "WriteAndCommit" >> beam.ParDo(_WriteShardFn(self._config))
        )
