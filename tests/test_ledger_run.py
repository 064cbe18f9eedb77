"""Whole runs against the ledger: volunteers with ``--claim`` on PostgreSQL, leases skipped,
a SIGKILLed run's shards reclaimed after its lease lapses, two runs started at once.

The real pipeline (FnApiRunner, tiny CLIP, loopback image server) on the demo's inputs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from clipcrawl.io import faults
from clipcrawl.io.coordinator import Coordinator
from clipcrawl.io.leases import Lease
from clipcrawl.io.ledger_dashboard import dashboard
from clipcrawl.pipelines import build_dataset
from clipcrawl.pipelines.demo import make_demo_inputs
from clipcrawl.pipelines.image_server import ImageServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = [
    "--clip_model=clipcrawl-tiny", "--clip_pretrained=", "--allow_private_addresses", "--per_host_rate=0",
    "--image_size=64", "--direct_running_mode=in_memory", "--direct_num_workers=1",
]

pytest_plugins = ("tests.postgres_server",)  # a real PostgreSQL, once per session


@pytest.fixture(scope="module")
def inputs_glob(tmp_path_factory):
    with ImageServer({}) as server:
        inputs_dir = str(tmp_path_factory.mktemp("inputs"))
        make_demo_inputs(server, inputs_dir)  # three WATs (one without images)
        yield f"{inputs_dir}/*.warc.wat.gz"


def ledger_rows(url: str) -> list[dict]:
    coordinator = Coordinator(url)
    try:
        return coordinator.shards()
    finally:
        coordinator.close()


def test_volunteers_register_then_claim_from_a_postgres_ledger(inputs_glob, postgres_url, tmp_path) -> None:
    output = str(tmp_path / "dataset")
    where = [f"--output={output}", f"--coordinator={postgres_url}", *COMMON]
    organiser = build_dataset.run([f"--input={inputs_glob}", "--claim=0", "--nickname=organiser", *where])
    assert organiser.shards_registered == 3 and organiser.shards_processed == ()
    assert "ledger-" not in organiser.coordinator_url  # the password is masked in the summary

    alice = build_dataset.run(["--claim=2", "--nickname=alice", *where])  # no --input: any registered shard
    bob = build_dataset.run(["--claim=5", "--nickname=bob", *where])
    late = build_dataset.run(["--claim=5", "--nickname=carol", *where])

    assert alice.shards_processed == (0, 1) and bob.shards_processed == (2,) and late.shards_processed == ()
    rows = ledger_rows(postgres_url)
    assert [(row["status"], row["nickname"], row["attempts"]) for row in rows] == [
        ("done", "alice", 1), ("done", "alice", 1), ("done", "bob", 1)]
    assert all(os.path.exists(os.path.join(output, f"{row['shard_no']:06d}.parquet")) for row in rows)
    coordinator = Coordinator(postgres_url)
    board = dashboard(coordinator)["leaderboard"]
    coordinator.close()
    assert [(entry["nickname"], entry["shards"]) for entry in board] == [("alice", 2), ("bob", 1)]
    assert board[0]["pairs_kept"] == rows[0]["pairs_kept"] + rows[1]["pairs_kept"] > 0


def test_a_shard_leased_by_a_live_run_is_skipped_with_a_log_line(inputs_glob, tmp_path, caplog) -> None:
    output = str(tmp_path / "dataset")
    url = f"sqlite:///{output}/clipcrawl.sqlite"
    coordinator = Coordinator(url)
    coordinator.register(sorted(__import__("glob").glob(inputs_glob)))
    other = Lease.for_run("other", 600)
    assert coordinator.claim(other, shard_nos=[1]) == [(1, coordinator.shards()[1]["uri"])]
    coordinator.close()

    with caplog.at_level(logging.WARNING, logger="clipcrawl.pipelines.build_dataset"):
        summary = build_dataset.run([f"--input={inputs_glob}", f"--output={output}", "--nickname=me", *COMMON])

    assert summary.shards_processed == (0, 2) and summary.shards_skipped == (1,)
    assert "shard 000001" in caplog.text and "leased to other@" in caplog.text
    rows = ledger_rows(url)
    assert [row["status"] for row in rows] == ["done", "running", "done"]
    assert rows[1]["lease_owner"] == other.owner  # untouched


def test_a_killed_run_leaves_leases_that_the_next_run_takes_after_they_lapse(inputs_glob, tmp_path) -> None:
    output = str(tmp_path / "dataset")
    url = f"sqlite:///{output}/clipcrawl.sqlite"
    args = [f"--input={inputs_glob}", f"--output={output}", *COMMON]
    env = {**os.environ, faults.ENV_POINT: "run.after_claim"}
    killed = subprocess.run([sys.executable, "-m", "clipcrawl", "run", *args, "--nickname=doomed", "--lease_seconds=4"],
                            env=env, cwd=ROOT, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    coordinator = Coordinator(url)
    assert coordinator.claim(Lease.for_run("eager", 60)) == []  # all three are still leased
    coordinator.close()
    rows = ledger_rows(url)
    assert {row["status"] for row in rows} == {"running"} and {row["nickname"] for row in rows} == {"doomed"}
    expires = max(row["lease_expires_at"] for row in rows)
    while time.time() < expires.timestamp() + 0.2:
        time.sleep(0.2)

    rescue = build_dataset.run([*args, "--nickname=rescuer"])

    assert rescue.shards_processed == (0, 1, 2)
    rows = ledger_rows(url)
    assert [(row["status"], row["attempts"], row["nickname"]) for row in rows] == [("done", 2, "rescuer")] * 3


@pytest.mark.slow
def test_two_plain_runs_started_at_once_split_the_shards(inputs_glob, tmp_path) -> None:
    output = str(tmp_path / "dataset")
    args = [sys.executable, "-m", "clipcrawl", "run", f"--input={inputs_glob}", f"--output={output}", *COMMON]
    runs = [subprocess.Popen([*args, f"--nickname=run{i}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err.decode()[-2000:]
    rows = ledger_rows(f"sqlite:///{output}/clipcrawl.sqlite")
    assert [(row["status"], row["attempts"]) for row in rows] == [("done", 1)] * 3  # each shard processed once
