"""The live progress display: shown on a terminal, silent without one, fed by mirrored counters."""

from __future__ import annotations

import io
import os
import pathlib
import re
import subprocess
import sys
import threading

import apache_beam as beam
import pytest
from rich.console import Console

from clipcrawl.pipelines import progress
from clipcrawl.transforms import metrics
from tests.conftest import beam_options

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("mode", "tty", "environ", "runner", "shown"),
    [
        ("auto", True, {}, "FnApiRunner", True),
        ("auto", False, {}, "FnApiRunner", False),
        ("auto", True, {"CI": "true"}, "FnApiRunner", False),
        ("auto", True, {}, "DirectRunner", True),
        ("auto", True, {}, "DataflowRunner", False),
        ("on", False, {"CI": "1"}, "FnApiRunner", True),
        ("on", True, {}, "FlinkRunner", False),
        ("off", True, {}, "FnApiRunner", False),
    ],
)
def test_when_the_display_is_shown(mode: str, tty: bool, environ: dict, runner: str, shown: bool) -> None:
    assert progress.wanted(mode, runner, _Stream(tty), environ) is shown


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="auto"):
        progress.wanted("sometimes", "FnApiRunner", _Stream(True), {})


def test_rate_is_recent_while_moving_and_the_active_span_once_stopped() -> None:
    meter = progress.RateMeter(window=10.0)
    assert meter.rate() is None
    meter.update(0.0, 0)
    meter.update(1.0, 0)  # the stage starts between t=1 and t=2
    meter.update(2.0, 100)
    meter.update(4.0, 500)
    assert meter.rate() == pytest.approx(200.0)  # (500 - 100) / (4 - 2): the last seconds
    for t in range(5, 30):
        meter.update(float(t), 900)  # done at t=5, then idle
    assert meter.rate() == pytest.approx(900 / (5.0 - 1.0))  # over the span in which it moved


def test_shard_rate_is_over_the_whole_run_in_a_unit_that_reads_at_least_one() -> None:
    assert progress.shard_rate(0, 30.0) is None and progress.shard_rate(3, 0.0) is None
    assert progress.shard_rate(3, 12.0) == pytest.approx(0.25)
    assert progress.format_shard_rate(None) == ""
    assert progress.format_shard_rate(2.5) == "2.5/s"
    assert progress.format_shard_rate(250.0) == "250/s"
    assert progress.format_shard_rate(0.25) == "15.0/min"
    assert progress.format_shard_rate(1 / 60) == "1.0/min"
    assert progress.format_shard_rate(3 / 3725) == "2.9/h"


def test_frame_shows_shards_counts_and_rates() -> None:
    counts = {
        progress.SHARDS_DONE: 2, progress.SHARDS_FAILED: 1, progress.SHARDS_SEEN: 3,
        metrics.counter_key(metrics.EXTRACT, metrics.FORWARDED): 12345,
        progress.DOWNLOADS_TRIED: 1000,
        metrics.counter_key(metrics.DOWNLOAD, metrics.FORWARDED): 900,
    }
    meters = {key: progress.RateMeter() for _, key in progress.ROWS}
    for _, key in progress.ROWS:
        meters[key].update(0.0, 0)
        meters[key].update(2.0, counts.get(key, 0))
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(progress.render(counts, 4, meters, elapsed=3725))
    text = console.export_text()
    assert "shards 3/4" in text and "1 failed" in text and "1:02:05" in text
    assert re.search(r"shards 3/4 \(1 failed\).*\s2\.9/h\s+1:02:05", text)  # 3 shards in 3725 s
    assert re.search(r"pairs extracted\s+12,345\s+6,172/s", text)
    assert re.search(r"images downloaded\s+900\s+450/s\s+of 1,000 tried", text)
    assert re.search(r"pairs kept\s+0\s", text)


def test_counters_are_mirrored_to_a_file_in_this_process(tmp_path: pathlib.Path) -> None:
    counters = metrics.StageCounters(metrics.FILTER)
    counters.total.inc()  # not mirrored: no directory yet
    metrics.mirror_counts(str(tmp_path))
    try:
        counters.total.inc(3)
        counters.forwarded.inc(2)
        counters.drop("filtered_text")
    finally:
        metrics.mirror_counts(None)  # flushes
    counters.total.inc()  # not mirrored any more
    ns = metrics.namespace(metrics.FILTER)
    assert progress.read_counts(str(tmp_path)) == {
        f"{ns}/total": 3, f"{ns}/forwarded": 2, f"{ns}/dropped": 1, f"{ns}/dropped_filtered_text": 1
    }


def test_a_worker_process_mirrors_through_the_environment(tmp_path: pathlib.Path) -> None:
    script = (
        "from clipcrawl.transforms import metrics\n"
        "c = metrics.StageCounters(metrics.DOWNLOAD)\n"
        "c.total.inc(5); c.forwarded.inc(4); c.drop('failed_to_download')\n"
    )  # no explicit flush: the worker's last counts are written when it exits
    env = {**os.environ, metrics.PROGRESS_DIR_ENV: str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    (tmp_path / "partial.json.tmp").write_text('{"clipcrawl.download/total": 10')  # a write in progress
    (tmp_path / "garbage.json").write_text("{")
    counts = progress.read_counts(str(tmp_path))
    assert counts == {
        "clipcrawl.download/total": 5, "clipcrawl.download/forwarded": 4,
        "clipcrawl.download/dropped": 1, "clipcrawl.download/dropped_failed_to_download": 1,
    }


class _CountFn(beam.DoFn):
    def __init__(self) -> None:
        self._extract = metrics.StageCounters(metrics.EXTRACT)
        self._write = metrics.StageCounters(metrics.WRITE)

    def process(self, element: int):
        self._extract.total.inc()
        self._extract.forwarded.inc()
        if element == 0:
            self._write.total.inc()
            self._write.forwarded.inc()
        yield element


def test_run_with_progress_draws_beams_final_counts_and_cleans_up(capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = beam.Pipeline(options=beam_options("--direct_running_mode=in_memory"))
    _ = pipeline | beam.Create(range(7)) | beam.ParDo(_CountFn())
    result = progress.run_with_progress(pipeline, "on", shards=1)
    assert result.state == "DONE"
    text = ANSI.sub("", capsys.readouterr().err)
    assert "shards 1/1" in text
    assert re.search(r"pairs extracted\s+7\b", text)
    assert metrics.PROGRESS_DIR_ENV not in os.environ and metrics._mirror is None


def test_run_with_progress_off_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = beam.Pipeline(options=beam_options("--direct_running_mode=in_memory"))
    _ = pipeline | beam.Create(range(3)) | beam.ParDo(_CountFn())
    progress.run_with_progress(pipeline, "off", shards=1)
    assert capsys.readouterr().err == ""
    assert metrics._mirror is None


# --- The real command: its stderr on a pseudo-terminal, then on a pipe. ---


def _demo(root: pathlib.Path, stderr_tty: bool) -> tuple[int, str, str]:
    """``clipcrawl demo`` in a subprocess; stdout is a pipe, stderr a pty or a pipe."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", metrics.PROGRESS_DIR_ENV)}
    env.update(TERM="xterm-256color", COLUMNS="100")
    command = [sys.executable, "-m", "clipcrawl", "demo", "--root", str(root)]
    if not stderr_tty:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr
    leader, follower = os.openpty()
    chunks: list[bytes] = []

    def drain() -> None:  # keep reading, or the child blocks on a full terminal buffer
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL)
        os.close(follower)
        out, _ = child.communicate(timeout=300)
    finally:
        reader.join(timeout=30)
        os.close(leader)
    return child.returncode, out.decode(), b"".join(chunks).decode("utf-8", "replace")


def test_progress_is_drawn_on_a_terminal(tmp_path: pathlib.Path) -> None:
    code, out, terminal = _demo(tmp_path / "tty", stderr_tty=True)
    assert code == 0, terminal[-3000:]
    assert "16 kept" in out  # the summary still goes to stdout
    screen = ANSI.sub("", terminal).replace("\r", "")
    assert "\x1b[" in terminal  # drawn with cursor movement and colour
    last = screen[screen.rindex("clipcrawl shards") :]  # the frame left on screen: Beam's final counts
    assert "shards 3/3" in last
    # The shard rate, averaged over the run: 3 shards over the elapsed time shown beside it.
    header = re.search(r"shards 3/3 .*?\s(\d+(?:\.\d)?)/(s|min|h)\s+(\d+):(\d\d):(\d\d)", last)
    assert header, last[:400]
    scale = {"s": 1, "min": 60, "h": 3600}[header.group(2)]
    rate, rounding = float(header.group(1)) / scale, 0.05 / scale  # per second; shown to 0.1 of its unit
    elapsed = 3600 * int(header.group(3)) + 60 * int(header.group(4)) + int(header.group(5))
    assert 3 / (elapsed + 1) - rounding <= rate <= 3 / max(elapsed, 1) + rounding
    assert re.search(r"pairs extracted\s+32\s", last) and re.search(r"pairs kept\s+16\s", last)
    assert re.search(r"images downloaded\s+24\s.*of 28 tried", last) and re.search(r"rows written\s+32\s", last)


def test_no_progress_without_a_terminal(tmp_path: pathlib.Path) -> None:
    code, out, piped = _demo(tmp_path / "pipe", stderr_tty=False)
    assert code == 0, piped[-3000:]
    assert "16 kept" in out
    for trace in ("clipcrawl shards", "pairs extracted", "rows written", "\x1b["):
        assert trace not in piped and trace not in out
    # Nor Beam's complaints about type hints it cannot use (bare TaggedOutput, non-PCollection).
    assert "type hint will be ignored" not in piped and "Bare TaggedOutput" not in piped, piped[-3000:]
