"""The CLIP throughput benchmark runs end to end in its smoke mode (timings are printed, never asserted).

Smoke mode scores with the packaged clipcrawl-tiny on the CPU in fp32 and bf16, so one run goes
through every stage (forward, loop, beam), the per-step breakdown, the FLOP count at the model's
own 32-token context, and both deviation reports.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
STAGES = ("forward", "loop", "beam")
PRECISIONS = ("fp32", "bf16")
BREAKDOWN_STEPS = ("decode+resize", "tokenize", "to device+normalize", "image tower", "text tower", "score() whole")


def test_clip_bench_smoke_prints_every_stage_the_breakdown_and_the_deviations(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "rows.json"
    result = subprocess.run(
        [sys.executable, str(BENCH / "clip_throughput.py"), "--smoke", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stdout = result.stdout

    # The table: one row per stage and precision, with a positive rate printed and in the JSON.
    table = {(line.split()[0], line.split()[1]): line.split() for line in stdout.splitlines()
             if line.split()[:1] and line.split()[0] in STAGES}
    assert set(table) == {(stage, precision) for stage in STAGES for precision in PRECISIONS}, stdout
    assert all(float(row[6]) > 0 for row in table.values()), stdout  # the pairs/s column
    report = json.loads(out.read_text())
    assert sorted((row["stage"], row["precision"]) for row in report["rows"]) == sorted(table)
    assert all(row["pairs"] == 16 and row["pairs_per_s"] > 0 for row in report["rows"])
    assert all(re.search(r"[+-]\d+\.\d%", line) for line in stdout.splitlines() if line.startswith("beam ")), stdout

    # The FLOPs use the tiny model's own context (a fixed 77 crashed it).
    assert "32-token text" in stdout, stdout
    assert report["ceiling"]["context_length"] == 32
    assert report["ceiling"]["image_gflop"] > 0 and report["ceiling"]["text_gflop_full_context"] > 0

    # The breakdown: every step of score() timed, for each precision.
    for precision in PRECISIONS:
        line = next((line for line in stdout.splitlines() if f"ms per batch of 8 ({precision}, cpu):" in line), "")
        for step in BREAKDOWN_STEPS:
            assert re.search(rf"{re.escape(step)} \d+\.\d", line), (step, stdout)

    # Both deviation reports compare bf16 with fp32: non-zero (bf16 really ran) and small.
    assert "nothing to compare" not in stdout, stdout
    random_pairs = report["deviations"]["bf16/cpu"]
    assert 0 < random_pairs["mean"] <= random_pairs["max"] < 0.1, random_pairs
    trained = report["tiny_deviations"]["bf16/cpu"]
    assert 0 < trained["mean"] <= trained["max"] < 0.1 and trained["flips"] == 0, trained
    number = r"\d\.\d\de-\d\d"
    assert re.search(rf"over 16 pairs: bf16/cpu: max {number}, p99 {number}, mean {number}", stdout), stdout
    assert re.search(rf"trained tiny CLIP, 8 shapes .*bf16/cpu: max {number}, p99 {number}, mean {number}, flips 0",
                     stdout), stdout
