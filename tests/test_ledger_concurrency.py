"""Several processes claiming from one ledger at the same moment never get the same shard.

Five processes (spawned, each with its own engine) wait on a barrier, then claim small
batches until nothing is left, completing what they took: on one PostgreSQL database
(``FOR UPDATE SKIP LOCKED``) and on one SQLite file (``BEGIN IMMEDIATE``). A third of the
shards sit under a crashed run's lapsed lease. Every shard is claimed exactly once, all end
done, the rescued ones with two attempts and the others with one.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from clipcrawl.io.coordinator import Coordinator, ShardCounts
from clipcrawl.io.leases import Lease

WORKERS = 5
SHARDS = 60

pytest_plugins = ("tests.postgres_server",)  # a real PostgreSQL, once per session


def claim_until_empty(url: str, nickname: str, barrier, results, batch: int) -> None:
    """One volunteer: claim ``batch`` at a time until the ledger has nothing left, then report."""
    coordinator = Coordinator(url)
    lease = Lease.for_run(nickname, 60)
    taken: list[int] = []
    barrier.wait(timeout=60)
    while True:
        claimed = coordinator.claim(lease, limit=batch)
        if not claimed:
            break
        time.sleep(0.005)  # "work": lets the others in between claims
        for shard_no, _ in claimed:
            coordinator.complete(shard_no, ShardCounts(1, 1, 1, 1), owner=lease.owner)
        taken += [no for no, _ in claimed]
    coordinator.close()
    results.put((nickname, taken))


def race(url: str, batch: int) -> dict[str, list[int]]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    workers = [context.Process(target=claim_until_empty, args=(url, f"v{i}", barrier, results, batch))
               for i in range(WORKERS)]
    for worker in workers:
        worker.start()
    taken = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return taken


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_processes_claiming_at_once_never_share_a_shard(ledger_url) -> None:
    setup = Coordinator(ledger_url)
    setup.register([f"s3://cc/{i:03d}.wat.gz" for i in range(SHARDS)])
    crashed = Lease.for_run("crashed", 0.2)  # took the first third, then "died": no heartbeat
    assert len(setup.claim(crashed, limit=SHARDS // 3)) == SHARDS // 3
    setup.close()
    time.sleep(0.4)

    taken = race(ledger_url, batch=3)

    every = [no for shard_nos in taken.values() for no in shard_nos]
    assert sorted(every) == list(range(SHARDS))  # all claimed (the lapsed ones too), none twice
    check = Coordinator(ledger_url)
    rows = check.shards()
    check.close()
    assert {row["status"] for row in rows} == {"done"}
    assert [row["attempts"] for row in rows] == [2] * (SHARDS // 3) + [1] * (SHARDS - SHARDS // 3)
    owner = {row["shard_no"]: row["nickname"] for row in rows}
    assert all(owner[no] == nickname for nickname, shard_nos in taken.items() for no in shard_nos)


def test_a_new_sqlite_ledger_opens_while_another_process_holds_its_write_lock(tmp_path) -> None:
    """Switching a new file to WAL needs a lock: it waits for the busy timeout (30 s), not the
    driver's default 5 s. Two runs starting at once on a new ledger met exactly this in CI."""
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE held (x)")  # a rollback-journal file, not yet WAL
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO held VALUES (1)")
    context = multiprocessing.get_context("spawn")
    opened = context.Queue()
    process = context.Process(target=_open_and_register, args=(f"sqlite:///{path}", opened))
    process.start()
    time.sleep(6.5)  # past the 5 s the driver alone would have waited
    holder.execute("COMMIT")
    holder.close()
    process.join(60)
    assert process.exitcode == 0 and opened.get(timeout=5) == "ok"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _open_and_register(url: str, opened: multiprocessing.Queue) -> None:
    coordinator = Coordinator(url)
    coordinator.register(["/data/a.warc.wat.gz"])
    coordinator.close()
    opened.put("ok")
