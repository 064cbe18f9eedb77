"""Whole runs against the ledger: volunteers with ``--claim`` on PostgreSQL, leases skipped,
a SIGKILLed run's shards reclaimed after its lease lapses, a SIGKILLed Beam worker ending
its run instead of hanging it, two runs started at once (SQLite and PostgreSQL), and a
heartbeat keeping a run's shards past their first expiry while another run tries to claim.

The real pipeline (FnApiRunner, tiny CLIP, loopback image server) on the demo's inputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
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


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dataset' / 'clipcrawl.sqlite'}"
    return request.getfixturevalue("postgres_url")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clipcrawl", "run", *args]


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str] | None = None):
    """A run in its own process group; whatever is left of the group is killed at the end."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            process.communicate()


@pytest.mark.slow
def test_two_plain_runs_started_at_once_split_the_shards(inputs_glob, ledger_url, tmp_path) -> None:
    output = str(tmp_path / "dataset")
    args = cli(f"--input={inputs_glob}", f"--output={output}", f"--coordinator={ledger_url}", *COMMON)
    traces = [tmp_path / f"run{i}.trace" for i in range(2)]  # the kill points each run passed
    runs = [subprocess.Popen([*args, f"--nickname=run{i}"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, faults.ENV_TRACE: str(traces[i])})
            for i in range(2)]
    processed = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err.decode()[-2000:]
        processed += [int(line.split()[2]) for line in out.decode().splitlines() if line.startswith("this run:")]
    rows = ledger_rows(ledger_url)
    assert [(row["status"], row["attempts"]) for row in rows] == [("done", 1)] * 3  # each shard claimed once
    commits = [trace.read_text().split().count("writer.after_commit") if trace.exists() else 0 for trace in traces]
    assert commits == processed and sum(commits) == 3  # each shard's files written by one run, once
    assert {row["nickname"] for row in rows} <= {"run0", "run1"}
    for row in rows:
        keys = pq.read_table(os.path.join(output, f"{row['shard_no']:06d}.parquet")).column("key").to_pylist()
        assert len(keys) == len(set(keys)) == row["pairs_extracted"]


@pytest.mark.slow
def test_a_sigkilled_beam_worker_ends_its_run_and_frees_its_shards(inputs_glob, tmp_path) -> None:
    """A worker process killed (as by the OOM killer) used to hang the run forever while its
    heartbeat kept the shards leased. Now the run fails them at once and exits non-zero."""
    output = str(tmp_path / "dataset")
    url = f"sqlite:///{output}/clipcrawl.sqlite"
    args = cli(f"--input={inputs_glob}", f"--output={output}", "--nickname=oom", "--lease_seconds=600",
               *[arg for arg in COMMON if not arg.startswith("--direct_")],
               "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    env = {**os.environ, faults.ENV_POINT: "extract.record"}  # fires in the worker reading the first record
    with started(args, env) as run:
        _, err = run.communicate(timeout=180)  # the bound; before the fix it never exited
        with pytest.raises(ProcessLookupError):  # the launcher left no worker process behind
            os.killpg(run.pid, 0)
    log = err.decode()
    assert run.returncode == 1, log[-3000:]
    assert "a Beam worker process died (signal 9, SIGKILL" in log
    rows = ledger_rows(url)
    unfinished = [row["shard_no"] for row in rows if row["status"] != "done"]
    assert unfinished and all(row["status"] == "failed" and row["attempts"] == 1 and "signal 9" in row["error"]
                              for row in rows if row["shard_no"] in unfinished)
    assert all(row["lease_owner"] is None for row in rows)
    coordinator = Coordinator(url)
    try:  # claimable now, not after the 600 s lease
        assert [no for no, _ in coordinator.claim(Lease.for_run("next", 60))] == unfinished
    finally:
        coordinator.close()


@pytest.mark.slow
def test_the_heartbeat_keeps_a_run_s_shards_past_their_first_expiry(inputs_glob, tmp_path) -> None:
    output = str(tmp_path / "dataset")
    url = f"sqlite:///{output}/clipcrawl.sqlite"
    lease_seconds = 3.0
    slow = ["--per_host_rate=3"]  # one loopback host: about 10 s of downloads, several leases long
    args = cli(f"--input={inputs_glob}", f"--output={output}", "--nickname=steady",
               f"--lease_seconds={lease_seconds:g}", *COMMON, *slow)
    eager = Lease.for_run("eager", 60)
    claims, first_expiry, last_expiry, outlived = [], None, None, 0.0
    with started(args) as run:
        coordinator = Coordinator(url) if _wait_for(lambda: os.path.exists(f"{output}/clipcrawl.sqlite")) else None
        assert coordinator is not None
        try:
            while run.poll() is None:
                running = [row for row in coordinator.shards() if row["status"] == "running"]
                if running:
                    expiry = min(row["lease_expires_at"] for row in running)
                    first_expiry = first_expiry or expiry
                    last_expiry = expiry
                    outlived = max(outlived, time.time() - first_expiry.timestamp())
                    claims.append(coordinator.claim(eager))
                time.sleep(0.25)
        finally:
            coordinator.close()
        _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err.decode()[-2000:]
    assert outlived > lease_seconds  # still running a whole lease after the first expiry...
    assert last_expiry > first_expiry  # ...because the heartbeat pushed it forward
    assert len(claims) > 10 and all(claim == [] for claim in claims)  # and the other run got nothing
    rows = ledger_rows(url)
    assert [(row["status"], row["attempts"], row["nickname"]) for row in rows] == [("done", 1, "steady")] * 3


def _wait_for(condition, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
