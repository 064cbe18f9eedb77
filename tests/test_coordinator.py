"""The SQLite shard ledger: stable numbers, done-skipping, failures, summary, masking."""

from __future__ import annotations

import sqlite3

from clipcrawl.io.coordinator import Coordinator, ShardCounts, mask_url


def ledger(tmp_path) -> Coordinator:
    return Coordinator(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def test_shard_numbers_are_stable_and_new_uris_get_the_next_ones(tmp_path) -> None:
    first = ledger(tmp_path)
    assert first.register(["b", "a"]) == {"b": 0, "a": 1}
    first.close()
    again = ledger(tmp_path)  # a new process would see the same file
    assert again.register(["c", "a", "b"]) == {"c": 2, "a": 1, "b": 0}
    assert [row["status"] for row in again.shards()] == ["pending"] * 3


def test_to_process_skips_done_shards_unless_forced(tmp_path) -> None:
    coordinator = ledger(tmp_path)
    numbers = coordinator.register(["x", "y"])
    coordinator.start(numbers.values(), worker="me@host")
    coordinator.complete(numbers["x"], ShardCounts(4, 3, 2, 100))
    assert coordinator.to_process(numbers.values()) == [(numbers["y"], "y")]
    assert coordinator.to_process(numbers.values(), force=True) == [(0, "x"), (1, "y")]


def test_start_complete_fail_record_attempts_counts_and_errors(tmp_path) -> None:
    coordinator = ledger(tmp_path)
    numbers = coordinator.register(["x", "y", "z"])
    coordinator.start(numbers.values(), worker="me@host")
    coordinator.complete(numbers["x"], ShardCounts(pairs_extracted=4, images_ok=3, pairs_kept=2, bytes_written=100))
    coordinator.fail([numbers["y"]], "cannot read y")
    coordinator.fail(numbers.values(), "pipeline failed", only_running=True)  # only z is still running
    rows = {row["uri"]: row for row in coordinator.shards()}
    assert rows["x"]["status"] == "done" and rows["x"]["pairs_kept"] == 2 and rows["x"]["attempts"] == 1
    assert rows["x"]["worker"] == "me@host" and rows["x"]["finished_at"] is not None
    assert rows["y"]["status"] == "failed" and rows["y"]["error"] == "cannot read y"
    assert rows["z"]["status"] == "failed" and rows["z"]["error"] == "pipeline failed"
    coordinator.start([numbers["y"]], worker="me@host")
    assert {row["uri"]: row["attempts"] for row in coordinator.shards()}["y"] == 2
    assert coordinator.summary() == {
        "shards": {"pending": 0, "running": 1, "done": 1, "failed": 1},
        "pairs_extracted": 4,
        "images_downloaded": 3,
        "pairs_kept": 2,
        "bytes_written": 100,
    }


def test_sqlite_ledger_uses_wal_so_worker_processes_can_share_it(tmp_path) -> None:
    ledger(tmp_path).register(["x"])
    with sqlite3.connect(tmp_path / "ledger.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_many_uris_register_in_chunks(tmp_path) -> None:
    uris = [f"s3://cc/{i:05d}.wat.gz" for i in range(1203)]
    numbers = ledger(tmp_path).register(uris)
    assert [numbers[uri] for uri in uris] == list(range(1203))
    assert len(ledger(tmp_path).to_process(numbers.values())) == 1203


def test_mask_url_hides_passwords() -> None:
    masked = mask_url("postgresql+psycopg://crawler:s3cret@db.example:5432/clipcrawl")
    assert "s3cret" not in masked and "crawler" in masked
