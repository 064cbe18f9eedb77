"""The shard ledger on a SQLite file and on a real PostgreSQL server (started by the tests).

Stable numbers, done-skipping, leases (claim, extend, release, expire, park), in-place
migration of ledgers written before leases, kill points inside the transactions, masking.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from clipcrawl.io import faults
from clipcrawl.io.coordinator import Coordinator, ShardCounts, mask_secrets, mask_url
from clipcrawl.io.leases import Heartbeat, Lease
from clipcrawl.io.ledger_schema import LATEST_VERSION, SCHEMA_VERSIONS, LedgerSchemaError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest_plugins = ("tests.postgres_server",)  # a real PostgreSQL, once per session


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(ledger_url):
    coordinator = Coordinator(ledger_url)
    yield coordinator
    coordinator.close()


def rows_by_no(coordinator: Coordinator) -> dict[int, dict]:
    return {row["shard_no"]: row for row in coordinator.shards()}


def test_shard_numbers_are_stable_and_new_uris_get_the_next_ones(ledger_url) -> None:
    first = Coordinator(ledger_url)
    assert first.register(["b", "a"]) == {"b": 0, "a": 1}
    first.close()
    again = Coordinator(ledger_url)  # a new process would see the same ledger
    assert again.register(["c", "a", "b"]) == {"c": 2, "a": 1, "b": 0}
    assert [row["status"] for row in again.shards()] == ["pending"] * 3
    again.close()


def test_to_process_skips_done_shards_unless_forced(ledger) -> None:
    numbers = ledger.register(["x", "y"])
    ledger.start(numbers.values(), worker="me@host")
    ledger.complete(numbers["x"], ShardCounts(4, 3, 2, 100))
    assert ledger.to_process(numbers.values()) == [(numbers["y"], "y")]
    assert ledger.to_process(numbers.values(), force=True) == [(0, "x"), (1, "y")]


def test_start_complete_fail_record_attempts_counts_and_errors(ledger) -> None:
    numbers = ledger.register(["x", "y", "z"])
    ledger.start(numbers.values(), worker="me@host")
    ledger.complete(numbers["x"], ShardCounts(pairs_extracted=4, images_ok=3, pairs_kept=2, bytes_written=100))
    ledger.fail([numbers["y"]], "cannot read y")
    ledger.fail(numbers.values(), "pipeline failed", only_running=True)  # only z is still running
    rows = {row["uri"]: row for row in ledger.shards()}
    assert rows["x"]["status"] == "done" and rows["x"]["pairs_kept"] == 2 and rows["x"]["attempts"] == 1
    assert rows["x"]["worker"] == "me@host" and rows["x"]["finished_at"] is not None
    assert rows["y"]["status"] == "failed" and rows["y"]["error"] == "cannot read y"
    assert rows["z"]["status"] == "failed" and rows["z"]["error"] == "pipeline failed"
    ledger.start([numbers["y"]], worker="me@host")
    assert {row["uri"]: row["attempts"] for row in ledger.shards()}["y"] == 2
    assert ledger.summary() == {
        "shards": {"pending": 0, "running": 1, "done": 1, "failed": 1},
        "pairs_extracted": 4,
        "images_downloaded": 3,
        "pairs_kept": 2,
        "bytes_written": 100,
    }


def test_sqlite_ledger_uses_wal_so_worker_processes_can_share_it(tmp_path) -> None:
    Coordinator(f"sqlite:///{tmp_path / 'ledger.sqlite'}").register(["x"])
    with sqlite3.connect(tmp_path / "ledger.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_many_uris_register_and_claim_in_chunks(ledger) -> None:
    uris = [f"s3://cc/{i:05d}.wat.gz" for i in range(1203)]
    numbers = ledger.register(uris)
    assert [numbers[uri] for uri in uris] == list(range(1203))
    assert len(ledger.to_process(numbers.values())) == 1203
    lease = Lease.for_run("bulk", 60)
    taken = ledger.claim(lease, limit=700, shard_nos=numbers.values())
    assert [no for no, _ in taken] == list(range(700))
    assert len(ledger.claim(lease, shard_nos=numbers.values())) == 503


# --- leases -----------------------------------------------------------------------------


def test_claims_are_disjoint_count_attempts_and_record_who(ledger) -> None:
    ledger.register([f"u{i}" for i in range(5)])
    alice, bob = Lease.for_run("alice", 60), Lease.for_run("bob", 60)
    assert ledger.claim(alice, limit=2) == [(0, "u0"), (1, "u1")]
    assert ledger.claim(bob, limit=2) == [(2, "u2"), (3, "u3")]
    assert ledger.claim(bob, limit=2, shard_nos=[0, 1, 2, 3]) == []  # all leased, none done
    rows = rows_by_no(ledger)
    assert [rows[n]["nickname"] for n in range(4)] == ["alice", "alice", "bob", "bob"]
    assert rows[0]["lease_owner"] == alice.owner and rows[2]["lease_owner"] == bob.owner != alice.owner
    assert rows[0]["worker"].startswith("alice@") and all(rows[n]["attempts"] == 1 for n in range(4))
    assert rows[4]["status"] == "pending" and rows[4]["attempts"] == 0
    left = (rows[0]["lease_expires_at"] - rows[0]["started_at"]).total_seconds()
    assert left == pytest.approx(60, abs=1)
    assert ledger.claim(alice, limit=0) == []  # register-only path


def test_heartbeat_extends_only_its_own_leases(ledger) -> None:
    ledger.register(["a", "b"])
    mine, other = Lease.for_run("me", 1.0), Lease.for_run("other", 1.0)
    ledger.claim(mine, limit=1)
    ledger.claim(other, limit=1)
    before = rows_by_no(ledger)
    with Heartbeat(ledger, mine, interval=0.05) as heartbeat:
        deadline = time.monotonic() + 10
        while heartbeat.beats < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    after = rows_by_no(ledger)
    assert heartbeat.beats >= 2
    assert after[0]["lease_expires_at"] > before[0]["lease_expires_at"]
    assert after[1]["lease_expires_at"] == before[1]["lease_expires_at"]
    assert ledger.extend(other) == 1 and ledger.extend(Lease.for_run("nobody", 1)) == 0


def test_an_expired_lease_goes_back_to_pending_and_the_next_claim_takes_it(ledger) -> None:
    ledger.register(["a", "b"])
    crashed, rescuer = Lease.for_run("crashed", 0.3), Lease.for_run("rescuer", 60)
    assert ledger.claim(crashed) == [(0, "a"), (1, "b")]
    assert ledger.claim(rescuer) == []  # still leased
    time.sleep(0.5)
    assert ledger.claim(rescuer, limit=1) == [(0, "a")]
    rows = rows_by_no(ledger)
    assert rows[0]["attempts"] == 2 and rows[0]["lease_owner"] == rescuer.owner
    assert rows[1]["status"] == "pending" and "lease of crashed@" in rows[1]["error"] and "expired" in rows[1]["error"]
    ledger.complete(0, ShardCounts(1, 1, 1, 10), owner=crashed.owner)  # a stale owner changes nothing
    assert rows_by_no(ledger)[0]["status"] == "running"
    ledger.complete(0, ShardCounts(1, 1, 1, 10), owner=rescuer.owner)
    done = rows_by_no(ledger)[0]
    assert done["status"] == "done" and done["error"] is None and done["lease_owner"] is None


def test_a_shard_failing_max_attempts_times_is_parked_with_its_last_error(ledger) -> None:
    ledger.register(["bad", "good"])
    lease = Lease.for_run("me", 60)
    for attempt in (1, 2):
        assert ledger.claim(lease, limit=1, shard_nos=[0], max_attempts=2) == [(0, "bad")]
        ledger.fail([0], f"cannot read bad (try {attempt})", owner=lease.owner)
    assert ledger.claim(lease, shard_nos=[0], max_attempts=2) == []  # parked
    parked = rows_by_no(ledger)[0]
    assert (parked["status"], parked["attempts"], parked["error"]) == ("failed", 2, "cannot read bad (try 2)")
    assert ledger.claim(lease, shard_nos=[0], max_attempts=3) == [(0, "bad")]  # a run allowing more tries
    ledger.fail([0], "still bad")
    assert ledger.reset_failed([0]) == 1
    assert rows_by_no(ledger)[0]["attempts"] == 0 and ledger.claim(lease, limit=1, max_attempts=1) == [(0, "bad")]


def test_an_expired_lease_out_of_attempts_is_parked_not_claimed(ledger) -> None:
    ledger.register(["crashes-its-worker"])
    lease = Lease.for_run("me", 0.2)
    assert ledger.claim(lease, max_attempts=1) == [(0, "crashes-its-worker")]
    time.sleep(0.4)
    assert ledger.claim(Lease.for_run("next", 60), max_attempts=1) == []
    row = rows_by_no(ledger)[0]
    assert row["status"] == "failed" and "expired" in row["error"]


def test_force_takes_done_and_parked_shards_but_never_a_live_lease(ledger) -> None:
    ledger.register(["done", "parked", "leased"])
    me, other = Lease.for_run("me", 60), Lease.for_run("other", 60)
    ledger.claim(me, limit=2)
    ledger.complete(0, ShardCounts(0, 0, 0, 0))
    ledger.fail([1], "broken")
    ledger.claim(other, limit=1)
    assert ledger.claim(me, max_attempts=1) == []
    assert ledger.claim(me, max_attempts=1, force=True) == [(0, "done"), (1, "parked")]


def test_a_taken_over_shard_refuses_the_stale_owner_and_keeps_the_new_lease(ledger) -> None:
    """A run whose lease lapsed (still alive, heartbeat lost) cannot hold, mark or fail the
    shard another run now holds, nor clear that run's lease; the new holder can."""
    ledger.register(["a", "b"])
    stale, holder = Lease.for_run("stale", 0.2), Lease.for_run("holder", 60)
    ledger.claim(stale)
    time.sleep(0.4)
    assert ledger.claim(holder, limit=1) == [(0, "a")]  # b: lapsed, back to pending, unclaimed
    before = rows_by_no(ledger)

    assert ledger.hold(0, stale.owner, 60) is False
    assert ledger.complete(0, ShardCounts(9, 9, 9, 9), owner=stale.owner) is False
    assert ledger.fail([0, 1], "stale run's error", owner=stale.owner) == 0
    assert ledger.hold(1, stale.owner, 60) is False  # lapsed and expired: not held either
    assert rows_by_no(ledger) == before  # the holder's lease, expiry and counts untouched

    assert ledger.hold(0, holder.owner, 600) is True
    renewed = rows_by_no(ledger)[0]["lease_expires_at"]
    assert renewed > before[0]["lease_expires_at"] + dt.timedelta(seconds=500)
    assert ledger.complete(0, ShardCounts(3, 2, 1, 10), owner=holder.owner) is True
    assert rows_by_no(ledger)[0]["status"] == "done" and rows_by_no(ledger)[0]["pairs_kept"] == 1
    assert ledger.hold(0, holder.owner, 60) is False  # done: no lease to hold


def test_release_returns_shards_without_counting_the_attempt(ledger) -> None:
    ledger.register(["a", "b"])
    lease = Lease.for_run("me", 60)
    ledger.claim(lease)
    ledger.complete(0, ShardCounts(1, 1, 1, 1))
    assert ledger.release(lease, "stopped by Ctrl-C") == 1
    rows = rows_by_no(ledger)
    assert rows[0]["status"] == "done"
    assert (rows[1]["status"], rows[1]["attempts"], rows[1]["lease_owner"]) == ("pending", 0, None)


# --- schema versions ----------------------------------------------------------------------

_V1 = sa.MetaData()
_V1_SHARDS = sa.Table(  # the ledger as clipcrawl wrote it before leases (no version table)
    "shards", _V1,
    sa.Column("shard_no", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("uri", sa.Text, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.Text),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("pairs_extracted", sa.BigInteger, nullable=False, default=0),
    sa.Column("images_ok", sa.BigInteger, nullable=False, default=0),
    sa.Column("pairs_kept", sa.BigInteger, nullable=False, default=0),
    sa.Column("bytes_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("error", sa.Text),
)


def test_a_ledger_from_before_leases_is_migrated_in_place(ledger_url) -> None:
    engine = sa.create_engine(ledger_url)
    finished = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    with engine.begin() as connection:
        _V1.create_all(connection)
        connection.execute(_V1_SHARDS.insert().values(
            shard_no=0, uri="old-done", status="done", attempts=1, worker="bob@box", finished_at=finished,
            pairs_extracted=9, images_ok=7, pairs_kept=5, bytes_written=99))
        connection.execute(_V1_SHARDS.insert().values(
            shard_no=1, uri="old-running", status="running", attempts=1, worker="carol@box"))
        connection.execute(_V1_SHARDS.insert().values(shard_no=2, uri="old-pending", status="pending", attempts=0))
    engine.dispose()

    coordinator = Coordinator(ledger_url)
    assert coordinator.schema_version_found == 1
    rows = rows_by_no(coordinator)
    assert rows[0]["nickname"] == "bob" and rows[0]["pairs_kept"] == 5 and rows[0]["finished_at"] == finished
    assert rows[2]["nickname"] is None and rows[2]["lease_owner"] is None
    with coordinator.read() as connection:
        assert [v for (v,) in connection.execute(sa.select(SCHEMA_VERSIONS.c.version).order_by("version"))] == [1, 2]
    assert coordinator.register(["old-pending", "new"]) == {"old-pending": 2, "new": 3}
    # The old run left shard 1 "running" with no lease: it is claimable, as if its lease had lapsed.
    assert coordinator.claim(Lease.for_run("dave", 60)) == [(1, "old-running"), (2, "old-pending"), (3, "new")]
    coordinator.close()
    again = Coordinator(ledger_url)  # opening a current ledger changes nothing
    assert again.schema_version_found == LATEST_VERSION
    again.close()


def test_a_ledger_from_a_newer_clipcrawl_is_refused(ledger_url) -> None:
    Coordinator(ledger_url).close()
    engine = sa.create_engine(ledger_url)
    with engine.begin() as connection:
        connection.execute(SCHEMA_VERSIONS.insert(), [{"version": LATEST_VERSION + 1,
                                                       "applied_at": dt.datetime.now(dt.timezone.utc)}])
    engine.dispose()
    with pytest.raises(LedgerSchemaError, match="upgrade clipcrawl"):
        Coordinator(ledger_url)


# --- kill points ----------------------------------------------------------------------------


def test_every_ledger_transaction_passes_its_kill_point(ledger, tmp_path, monkeypatch) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setattr(faults, "_TRACE", str(trace))
    monkeypatch.setattr(faults, "_ACTIVE", True)
    ledger.register(["a", "b"])
    lease = Lease.for_run("me", 60)
    ledger.claim(lease)
    ledger.complete(0, ShardCounts(0, 0, 0, 0))
    ledger.fail([1], "x")
    assert trace.read_text().split() == [
        "coordinator.register.in_transaction", "coordinator.claim.in_transaction",
        "coordinator.complete.in_transaction", "coordinator.fail.in_transaction",
    ]


_KILLED_CHILD = """
import sys
from clipcrawl.io.coordinator import Coordinator, ShardCounts
from clipcrawl.io.leases import Lease
coordinator = Coordinator(sys.argv[1])
lease = Lease.for_run("doomed", 60)
if sys.argv[2] == "claim":
    coordinator.claim(lease)
else:
    coordinator.complete(0, ShardCounts(1, 1, 1, 1))
"""


@pytest.mark.parametrize("step", ["claim", "complete"])
def test_a_process_killed_inside_a_transaction_leaves_the_ledger_unchanged(ledger, step) -> None:
    ledger.register(["a", "b"])
    if step == "complete":
        ledger.claim(Lease.for_run("me", 60), limit=1)
    before = rows_by_no(ledger)
    env = {**os.environ, faults.ENV_POINT: f"coordinator.{step}.in_transaction"}
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, ledger.url, step], env=env, cwd=ROOT)
    assert child.returncode == -9  # SIGKILL at the point, before the commit
    assert rows_by_no(ledger) == before
    assert ledger.claim(Lease.for_run("next", 60), limit=1)  # and the ledger is not left locked


# --- masking ----------------------------------------------------------------------------------


def test_mask_url_hides_passwords() -> None:
    masked = mask_url("postgresql+psycopg://crawler:s3cret@db.example:5432/clipcrawl")
    assert "s3cret" not in masked and "crawler" in masked


def test_mask_secrets_hides_the_password_in_any_text(monkeypatch) -> None:
    url = "postgresql+psycopg://crawler:p%40ss%2Fword@db.example/clipcrawl"
    monkeypatch.setenv("PGPASSWORD", "from-the-env")
    text = f"could not connect to {url} as crawler with p@ss/word; PGPASSWORD=from-the-env"
    masked = mask_secrets(text, url)
    assert "p@ss/word" not in masked and "p%40ss%2Fword" not in masked and "from-the-env" not in masked
    assert "crawler" in masked and "***" in masked
