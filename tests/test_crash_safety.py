"""Crash safety: a run SIGKILLed at a named point, then rerun, gives the uninterrupted dataset.

The CI subset kills a real ``clipcrawl run`` (a subprocess) inside a tar write, inside the
coordinator transaction that marks a committed shard done, and during download; each point
must be reached, and after a rerun the dataset must equal an uninterrupted run's
(``tests/crash_snapshot.py`` says what is compared). Slow: each killed run is a new process
that imports torch and Beam. The whole matrix (Beam worker processes killed too)::

    python -m tests.crash_harness --all                                   # prints the table
    CLIPCRAWL_CRASH_FULL=1 python -m pytest -q tests/test_crash_safety.py  # same, as a test
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.crash_harness import ALL_POINTS, CI_POINTS, MULTI, CrashHarness, KillPoint, format_table, points_in_code
from tests.crash_snapshot import differences, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    # Baseline and reruns in this process: torch and Beam are imported once, not per run.
    with CrashHarness(tmp_path_factory.mktemp("crash"), rerun_in_process=True) as crash_harness:
        yield crash_harness


def test_kill_points_are_in_the_code() -> None:
    present = points_in_code()
    assert {point.name for point in CI_POINTS} <= present
    assert len({(point.name, point.hit, point.mode) for point in ALL_POINTS}) >= 20
    assert {point.name for point in ALL_POINTS} <= present


def test_kill_point_labels_round_trip() -> None:
    assert KillPoint.parse("writer.tar_member@3:multi") == KillPoint("writer.tar_member", 3, MULTI)
    assert KillPoint.parse("run.after_pipeline") == KillPoint("run.after_pipeline")
    assert all(KillPoint.parse(point.label) == point for point in ALL_POINTS)


def test_baseline_is_the_whole_dataset(harness) -> None:
    base = harness.baseline
    assert sorted(row["status"] for row in base.ledger.values()) == ["done"] * 4
    assert len(base.rows) == 48 and not base.duplicate_keys
    assert len(base.tars) == 6 and sum(len(members) for members in base.tars.values()) == 24 * 3
    assert not base.temporary and not base.strays


def test_comparison_finds_damage(harness, tmp_path) -> None:
    """The checks can fail: a stray temp file, a lost tar, a doubled row, a shard left running."""
    damaged = tmp_path / "damaged"
    shutil.copytree(harness.workdir / "baseline", damaged)
    (damaged / ".000001.parquet.0123456789ab.tmp").write_bytes(b"half a file")
    (damaged / "000001_01.tar").unlink()
    table = pq.read_table(damaged / "000002.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), damaged / "000002.parquet")
    with sqlite3.connect(damaged / "clipcrawl.sqlite") as ledger:
        ledger.execute("UPDATE shards SET status = 'running' WHERE shard_no = 0")
    found = "\n".join(differences(harness.baseline, snapshot(damaged)))
    assert "temporary files left: .000001.parquet.0123456789ab.tmp" in found
    assert "missing tar files: 000001_01.tar" in found
    assert "duplicate keys in parquet: 0000020000000" in found
    assert "shards not done in the ledger: 0=running" in found
    assert "missing rows" not in found and "000000_00.tar" not in found
    assert differences(harness.baseline, snapshot(harness.workdir / "baseline")) == []


@pytest.mark.parametrize("point", CI_POINTS, ids=lambda point: point.label)
def test_survives_kill(harness, point: KillPoint) -> None:
    verdict = harness.check(point)
    assert verdict.fired, verdict.describe()
    assert verdict.survived, verdict.describe()


@pytest.mark.skipif(not os.environ.get("CLIPCRAWL_CRASH_FULL"), reason="full kill matrix: CLIPCRAWL_CRASH_FULL=1")
def test_full_kill_matrix(harness) -> None:
    verdicts = [harness.check(point) for point in ALL_POINTS]
    print(format_table(verdicts))
    failed = [verdict.describe() for verdict in verdicts if verdict.fired and not verdict.survived]
    assert not failed, "\n".join(failed)
    assert sum(verdict.survived for verdict in verdicts) >= 20
