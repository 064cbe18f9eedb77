"""The download benchmark runs end to end in its smoke mode (timings are printed, never asserted)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


def test_download_bench_smoke_prints_the_clipcrawl_row(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "download.py"), "--smoke", "--corpus", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("clipcrawl ")]
    assert len(rows) == 2, result.stdout  # one per scenario: many hosts, one host
    assert all(int(row[1]) > 0 for row in rows), result.stdout  # the successes column
    assert "img2dataset: not" in result.stdout  # smoke never runs img2dataset
