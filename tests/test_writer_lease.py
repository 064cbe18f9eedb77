"""The writer marks a shard only while its run's lease holds it (``io/shard_writer.py``).

A real SQLite ledger and the real ``WriteShards`` on Beam's FnApiRunner. A run's lease
lapses and another run takes the shards; the stale run's writer, still alive, must not
write, mark done, fail, or clear the other run's lease, and must not delete the other
attempt's staged temporary files. The holder's writer, given its own lease, marks them.
"""

from __future__ import annotations

import os
import time

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from clipcrawl.io.coordinator import Coordinator
from clipcrawl.io.leases import Lease
from clipcrawl.io.shard_writer import WriterConfig, WriteShards
from clipcrawl.transforms import metrics
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from tests.conftest import beam_options

URIS = ["s3://cc/good.wat.gz", "s3://cc/unreadable.wat.gz"]
OTHER_ATTEMPT_TMP = ".000000_00.tar.0123456789ab.tmp"  # the holder's write in progress


def rejected(ordinal: int) -> Sample:
    base = Sample(sample_key(0, ordinal), 0, f"http://a.com/{ordinal}.png", "gone", "http://a.com/", URIS[0])
    return base.reject(Status.FAILED_TO_DOWNLOAD, "HTTP 404")


def write(config: WriterConfig, expected: list[tuple[int, bool, bool]]) -> int:
    """Shard 0 with two rows, shard 1 with a read error; asserts ``(shard_no, done, lease
    lost)`` per result and returns the ``dropped_lease_lost`` counter."""
    pipeline = beam.Pipeline(options=beam_options("--direct_running_mode=in_memory"))
    written = {
        "shards": pipeline | "Shards" >> beam.Create(list(enumerate(URIS))),
        "samples": pipeline | "Samples" >> beam.Create([rejected(0), rejected(1)]),
        "errors": pipeline | "Errors" >> beam.Create([(1, "cannot read unreadable.wat.gz")]),
    } | WriteShards(config)
    outcomes = written | beam.Map(lambda r: (r.shard_no, r.done, "no longer leased to this run" in (r.error or "")))
    assert_that(outcomes, equal_to(expected), label="Outcomes")
    result = pipeline.run()
    result.wait_until_finish()
    lost = result.metrics().query(MetricsFilter().with_name(metrics.dropped_name(metrics.LEASE_LOST)))["counters"]
    return sum(counter.committed for counter in lost)


@pytest.fixture
def taken_over(tmp_path):
    """The ledger after ``stale``'s lease lapsed and ``holder`` claimed both shards."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    coordinator = Coordinator(url)
    coordinator.register(URIS)
    stale, holder = Lease.for_run("stale", 0.2), Lease.for_run("holder", 600)
    assert len(coordinator.claim(stale)) == 2
    time.sleep(0.4)
    assert len(coordinator.claim(holder)) == 2
    yield coordinator, stale, holder
    coordinator.close()


def test_a_writer_whose_lease_was_taken_over_touches_nothing(taken_over, tmp_path) -> None:
    coordinator, stale, holder = taken_over
    out = tmp_path / "out"
    out.mkdir()
    (out / OTHER_ATTEMPT_TMP).write_bytes(b"the holder is writing this")
    before = coordinator.shards()

    config = WriterConfig(str(out), coordinator.url, lease_owner=stale.owner)
    lost = write(config, [(0, False, True), (1, False, True)])

    assert lost == 2
    assert coordinator.shards() == before  # still running under the holder's lease, same expiry
    assert {row["lease_owner"] for row in before} == {holder.owner}
    assert os.listdir(out) == [OTHER_ATTEMPT_TMP]  # nothing written, the holder's temp file kept


def test_the_holder_writes_and_marks_its_shards(taken_over, tmp_path) -> None:
    coordinator, _, holder = taken_over
    out = tmp_path / "out"

    config = WriterConfig(str(out), coordinator.url, lease_owner=holder.owner)
    lost = write(config, [(0, True, False), (1, False, False)])

    assert lost == 0
    rows = coordinator.shards()
    assert [(row["status"], row["lease_owner"]) for row in rows] == [("done", None), ("failed", None)]
    assert rows[0]["pairs_extracted"] == 2 and rows[1]["error"] == "cannot read unreadable.wat.gz"
    assert sorted(os.listdir(out)) == ["000000.parquet", "000000_stats.json"]
