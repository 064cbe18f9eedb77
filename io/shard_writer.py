"""WriteShards: per input shard, tar part(s) of kept samples + a parquet of every row + stats.

Files go to a temporary name and are committed by rename; stale tar parts from an earlier
run of the same shard are removed; only then is the shard marked done in the coordinator.
Names derive from ``shard_no``, so a redone shard overwrites and never duplicates.

Object stores have no atomic rename (s3fs's ``mv`` is copy + delete) and no multi-file
commit, but each object appears whole or not at all. So the commit is ordered for readers:
an earlier parquet of the shard is deleted first, the tars and stats are committed, stale
parts removed, and the parquet comes last. A shard whose parquet exists is complete; the
ledger's ``done`` follows after. A killed attempt leaves only hidden ``.{name}.{token}.tmp``
files (and, at worst, a shard without parquet); the next attempt at the shard deletes them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.typehints import no_annotations
from fsspec.core import url_to_fs

from clipcrawl.io import embeddings, faults, parquet
from clipcrawl.io.coordinator import Coordinator, ShardCounts
from clipcrawl.io.leases import DEFAULT_LEASE_SECONDS
from clipcrawl.io.shard_stats import shard_stats
from clipcrawl.transforms import metrics
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import FINAL_STATUSES, Status

_LOG = logging.getLogger(__name__)

# Tar members get this fixed mtime so the same samples always make the same bytes.
_TAR_MTIME = 0.0
# Hex digits of the per-attempt token in temporary names (``.{name}.{token}.tmp``).
_TOKEN_CHARS = 12


@dataclasses.dataclass(frozen=True)
class WriterConfig:
    output_dir: str
    coordinator_url: str
    samples_per_part: int = 10_000
    tag_names: tuple[str, ...] = ()  # prompt tags scored (--clip_tags): parquet columns tag_{name}
    save_embeddings: bool = False  # {shard}_img_emb.npy / _text_emb.npy of kept samples (io/embeddings.py)
    lease_owner: str | None = None  # the run's lease (set by the launcher); None: no ownership check
    lease_seconds: float = DEFAULT_LEASE_SECONDS

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
    _remove_orphans(fs, root, shard_no)
    token = uuid.uuid4().hex[:_TOKEN_CHARS]
    staged: dict[str, str] = {}  # final path -> temporary path

    def stage(name: str) -> Any:
        final = posixpath.join(root, name)
        staged[final] = f"{posixpath.join(root, '.' + name)}.{token}.tmp"
        return fs.open(staged[final], "wb")

    parts = [kept[i : i + config.samples_per_part] for i in range(0, len(kept), config.samples_per_part)]
    for part_no, part in enumerate(parts):
        with stage(tar_name(shard_no, part_no)) as sink:
            _write_tar(part, sink)
        faults.point("writer.tar_staged")
    # Row i = i-th kept sample in key order, as in the parquet; nothing kept: no files (io/embeddings.py).
    if config.save_embeddings and kept:
        for kind, matrix in embeddings.embedding_matrices(kept).items():
            with stage(embeddings.embedding_name(shard_no, kind)) as sink:
                embeddings.write_matrix(matrix, sink)
    with stage(parquet_name(shard_no)) as sink:
        parquet.write_rows([{**sample.metadata(), "preview": sample.preview} for sample in rows], sink,
                           config.tag_names)
    faults.point("writer.parquet_staged")
    tar_bytes = sum(fs.size(tmp) for final, tmp in staged.items() if final.endswith(".tar"))
    stats = shard_stats(shard_no, uri, rows, tar_bytes=tar_bytes, write_seconds=time.monotonic() - started)
    stats["read"] = read_report or {}
    with stage(stats_name(shard_no)) as sink:
        sink.write(json.dumps(stats, indent=2, sort_keys=True).encode("utf-8"))

    faults.point("writer.stats_staged")
    index = posixpath.join(root, parquet_name(shard_no))  # committed last: it marks the shard complete
    if fs.exists(index):
        fs.rm(index)
    for final, tmp in staged.items():
        if final != index:
            fs.mv(tmp, final)
            faults.point("writer.renamed")  # hit 1: one file committed, the others still staged
    _remove_stale_parts(fs, root, shard_no, keep=set(staged))
    fs.mv(staged[index], index)
    faults.point("writer.after_commit")
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
        faults.point("writer.tar_member")  # inside a tar write: a partial temporary tar
    writer.close()


def _list_shard_files(fs: fsspec.AbstractFileSystem, root: str, prefix: str) -> list[str]:
    """Paths directly in ``root`` whose name starts with ``prefix``.

    s3fs and gcsfs list only that key prefix (one request, not the whole output); other
    filesystems list ``root`` and the names are filtered here.
    """
    fs.invalidate_cache(root)  # another process may have written since this one listed
    try:
        paths = fs.find(root, maxdepth=1, prefix=prefix)
    except TypeError:  # a filesystem whose listing takes no prefix
        paths = fs.find(root, maxdepth=1)
    return [path for path in paths if posixpath.basename(path).startswith(prefix)]


def _remove_orphans(fs: fsspec.AbstractFileSystem, root: str, shard_no: int) -> None:
    """Temporary files of this shard that an earlier, killed or failed attempt left behind."""
    orphan = re.compile(rf"\.{shard_prefix(shard_no)}[._].*\.[0-9a-f]{{{_TOKEN_CHARS}}}\.tmp")
    for path in _list_shard_files(fs, root, "." + shard_prefix(shard_no)):
        if orphan.fullmatch(posixpath.basename(path)):
            _LOG.info("removing %s, left by an earlier attempt at shard %06d", path, shard_no)
            fs.rm(path)


def _remove_stale_parts(fs: fsspec.AbstractFileSystem, root: str, shard_no: int, keep: set[str]) -> None:
    """Tar parts and embedding files this shard had before must not survive a rerun that keeps
    fewer samples, or saves no embeddings: they would not match the new parquet."""
    kinds = f"{embeddings.IMAGE}|{embeddings.TEXT}"
    part = re.compile(rf"{shard_prefix(shard_no)}_(?:[0-9]{{2,}}\.tar|(?:{kinds})_emb\.npy)")
    for path in _list_shard_files(fs, root, shard_prefix(shard_no) + "_"):
        if part.fullmatch(posixpath.basename(path)) and path not in keep and fs.unstrip_protocol(path) not in keep:
            fs.rm(path)


class _WriteShardFn(beam.DoFn):
    """Writes each shard's group, then marks it done (or failed) in the coordinator.

    Only while this run's lease holds the shard: a run whose lease lapsed (its heartbeat
    could not reach the ledger for a whole lease) and was taken over must neither mark the
    new holder's shard nor clear its lease, nor delete its staged ``.tmp`` files. So the
    lease is checked and renewed before any file is touched (``Coordinator.hold``: the
    write then has a whole lease to finish), and ``complete``/``fail`` name the owner.
    If the lease is lost after that (a write slower than a lease), the files this run
    committed stay: every name derives from ``shard_no`` and the holder writes the same
    input into the same names, committing its parquet last, and it alone marks the shard.
    """

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
        owner = self._config.lease_owner
        if errors:
            message = "; ".join(errors)
            _LOG.error("shard %06d (%s) failed: %s", shard_no, uri, message)
            marked = self._coordinator.fail([shard_no], message, owner=owner)
            if owner is not None and not marked:
                yield self._lease_lost(shard_no, uri, "its failure was not recorded")
                return
            self._counters.drop("failed")
            yield ShardResult(shard_no, uri, done=False, error=message)
            return
        if owner is not None and not self._coordinator.hold(shard_no, owner, self._config.lease_seconds):
            yield self._lease_lost(shard_no, uri, "nothing was written")
            return
        result = write_shard(self._config, shard_no, uri, samples, reads[0] if reads else None)
        faults.point("writer.before_mark_done")  # files committed, the ledger not told yet
        marked = self._coordinator.complete(shard_no, result.counts, owner=owner)
        if owner is not None and not marked:
            yield self._lease_lost(shard_no, uri, "its committed files are left for the holder to rewrite")
            return
        faults.point("writer.after_mark_done")
        self._counters.forwarded.inc()
        self._counters.counter(metrics.SAMPLES_WRITTEN).inc(result.counts.pairs_kept)
        self._counters.counter(metrics.ROWS_WRITTEN).inc(result.counts.pairs_extracted)
        yield result

    def _lease_lost(self, shard_no: int, uri: str, consequence: str) -> ShardResult:
        message = f"shard {shard_no:06d} is no longer leased to this run: not marked; {consequence}"
        _LOG.warning("%s (%s)", message, uri)
        self._counters.drop(metrics.LEASE_LOST)
        return ShardResult(shard_no, uri, done=False, error=message)

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

    @no_annotations  # Beam takes only a PCollection/PBegin input hint and warns about a dict of them
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
