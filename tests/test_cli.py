"""The demo command end to end, and ``clipcrawl status`` on its ledger."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq

from clipcrawl.pipelines.cli import main


def test_demo_builds_a_dataset_offline_and_status_reads_its_ledger(tmp_path, capsys) -> None:
    root = tmp_path / "demo"
    assert main(["demo", f"--root={root}"]) == 0
    printed = capsys.readouterr().out
    assert f"dataset:      {root}/dataset" in printed
    assert "3 done" in printed

    dataset = root / "dataset"
    statuses = [s for name in sorted(os.listdir(dataset)) if name.endswith(".parquet")
                for s in pq.read_table(dataset / name).column("status").to_pylist()]
    assert statuses.count("success") > 0 and statuses.count("below_threshold") > 0
    assert {"failed_to_download", "failed_to_decode", "filtered_text", "duplicate"} <= set(statuses)
    assert any(name.endswith(".tar") for name in os.listdir(dataset))

    assert main(["status", f"--output={dataset}", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards"]["done"] == 3
    assert summary["pairs_kept"] == statuses.count("success")
    assert summary["pairs_extracted"] == len(statuses)

    assert main(["status", f"--output={dataset}"]) == 0
    assert "3 done" in capsys.readouterr().out


def test_status_without_a_ledger_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["status", f"--output={tmp_path}"]) == 2
    assert "no ledger" in capsys.readouterr().err


def test_unknown_command_prints_usage(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "usage: clipcrawl" in capsys.readouterr().out
