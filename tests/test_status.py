"""``clipcrawl status``: the dashboard (text and JSON) on SQLite and PostgreSQL, passwords masked."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa

from clipcrawl.io.coordinator import SHARDS, Coordinator, ShardCounts
from clipcrawl.io.leases import Lease
from clipcrawl.pipelines.cli import main

pytest_plugins = ("tests.postgres_server",)  # a real PostgreSQL, once per session


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("postgres_url")


def fill(url: str) -> None:
    """8 shards: 4 done (alice 3, bob 1) over the last 10 minutes, 1 running, 1 pending, 2 failed."""
    coordinator = Coordinator(url)
    coordinator.register([f"/data/cc-{i}.warc.wat.gz" for i in range(8)])
    alice, bob, carol = Lease.for_run("alice", 600), Lease.for_run("bob", 600), Lease.for_run("carol", 600)
    coordinator.claim(alice, limit=3)
    coordinator.claim(bob, limit=1)
    for shard_no, kept in ((0, 10), (1, 20), (2, 30), (3, 100)):
        coordinator.complete(shard_no, ShardCounts(pairs_extracted=kept * 2, images_ok=kept + 5, pairs_kept=kept,
                                                   bytes_written=kept * 1000))
    coordinator.claim(carol, limit=3, max_attempts=1)  # shards 4, 5, 6
    coordinator.fail([5], "HTTP 403 reading the input")
    coordinator.fail([6], "could not connect to server")
    with coordinator._write() as connection:  # done shards: started 10 min ago, spread over the window
        now = dt.datetime.now(dt.timezone.utc)
        connection.execute(SHARDS.update().where(SHARDS.c.shard_no < 4).values(started_at=now - dt.timedelta(minutes=10)))
        for shard_no in range(4):
            connection.execute(SHARDS.update().where(SHARDS.c.shard_no == shard_no)
                               .values(finished_at=now - dt.timedelta(minutes=8 - 2 * shard_no)))
        connection.execute(SHARDS.update().where(SHARDS.c.shard_no == 6).values(attempts=3))  # out of attempts
    coordinator.close()


def status_json(capsys, *args: str) -> dict:
    assert main(["status", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_reports_progress_rate_eta_leases_errors_and_leaderboard(ledger_url, capsys) -> None:
    fill(ledger_url)
    report = status_json(capsys, f"--coordinator={ledger_url}")

    assert report["shards"] == {"pending": 1, "running": 1, "done": 4, "failed": 2}
    assert (report["pairs_extracted"], report["images_downloaded"], report["pairs_kept"]) == (320, 180, 160)
    assert (report["failed_parked"], report["failed_retryable"], report["expired_leases"]) == (1, 1, 0)
    rate = report["throughput"]
    assert rate["shards_done"] == 4 and rate["pairs_kept"] == 160
    assert rate["shards_per_minute"] == pytest.approx(0.4, rel=0.05)  # 4 shards over the 10 minutes of work
    assert report["remaining_shards"] == 3  # pending + running + failed with attempts left
    assert report["eta_seconds"] == pytest.approx(450, rel=0.05)
    (lease,) = report["running"]
    assert lease["shard_no"] == 4 and lease["nickname"] == "carol" and not lease["expired"]
    assert 0 <= lease["age_seconds"] < 60 and 500 < lease["lease_left_seconds"] <= 600
    assert [(e["shard_no"], e["error"]) for e in report["errors"]] == [
        (6, "could not connect to server"), (5, "HTTP 403 reading the input")]
    assert [(r["rank"], r["nickname"], r["shards"], r["pairs_kept"]) for r in report["leaderboard"]] == [
        (1, "bob", 1, 100), (2, "alice", 3, 60)]
    assert report["schema_version"] == 2

    assert main(["status", f"--coordinator={ledger_url}"]) == 0
    text = capsys.readouterr().out
    assert "8 registered: 1 pending, 1 running, 4 done, 2 failed" in text
    assert "1 parked after 3 attempts, 1 to retry" in text
    # The span runs until now: the rate falls as the test runs (0.399 once ~1 s has passed).
    per_minute = re.search(r"throughput: +([0-9.]+) shards/min", text)
    assert per_minute and float(per_minute.group(1)) == pytest.approx(0.4, rel=0.05)
    assert "eta:" in text and "for 3 shard(s) to go" in text
    assert "running leases (1):" in text and "carol@" in text
    assert "HTTP 403 reading the input" in text
    board = text[text.index("leaderboard:"):].splitlines()
    assert board[2].split()[:4] == ["1", "bob", "1", "100"] and board[3].split()[:4] == ["2", "alice", "3", "60"]


def test_passwords_never_reach_the_output(postgres_server, postgres_url, capsys, monkeypatch) -> None:
    fill(postgres_url)
    password = postgres_server.password
    report = status_json(capsys, f"--coordinator={postgres_url}")
    assert password not in json.dumps(report) and "***" in report["coordinator"]
    assert main(["status", f"--coordinator={postgres_url}"]) == 0
    assert password not in capsys.readouterr().out

    # The URL may come from the environment, and the password from $PGPASSWORD.
    monkeypatch.setenv("CLIPCRAWL_COORDINATOR", postgres_url.replace(f":{password}@", "@"))
    monkeypatch.setenv("PGPASSWORD", password)
    assert status_json(capsys)["shards"]["done"] == 4

    # A server that refuses us: a clear error, still masked.
    monkeypatch.delenv("PGPASSWORD")
    wrong = postgres_url.replace(f":{password}@", f":{password}x@")
    assert main(["status", f"--coordinator={wrong}"]) == 1
    captured = capsys.readouterr()
    assert "cannot read the ledger" in captured.err and password not in captured.err + captured.out


def test_status_of_a_ledger_with_a_lapsed_lease_says_so(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    coordinator = Coordinator(url)
    coordinator.register(["a"])
    coordinator.claim(Lease.for_run("crashed", 600))
    with coordinator._write() as connection:
        connection.execute(sa.update(SHARDS).values(lease_expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)))
    coordinator.close()
    report = status_json(capsys, f"--coordinator={url}")
    assert report["expired_leases"] == 1 and report["running"][0]["expired"] is True
    assert report["eta_seconds"] is None  # nothing finished yet: no rate to go by
    assert main(["status", f"--coordinator={url}"]) == 0
    text = capsys.readouterr().out
    assert "1 running with an expired lease" in text and "eta:          unknown" in text


def test_status_needs_a_ledger(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CLIPCRAWL_COORDINATOR", raising=False)
    assert main(["status"]) == 2
    assert "--coordinator" in capsys.readouterr().err
