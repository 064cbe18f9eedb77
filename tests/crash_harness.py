"""Crash-safety harness: SIGKILL a real ``clipcrawl run`` at named points, rerun, compare.

For each kill point (``io/faults.py``: a name, the hit on which it fires, a runner mode) the
harness runs the real CLI in a subprocess on small offline inputs (generated WATs, a
loopback image server, the bundled tiny CLIP), with the point armed. The run dies there
(SIGKILL, no cleanup). It is then rerun, unarmed, until the ledger has nothing left to do,
and the dataset is compared with one uninterrupted run: same keys per shard, no duplicate,
no missing row, same statuses and decisions, same tar members, every shard ``done``, and no
temporary or stray file left in the output. A point the run never reached (or, with worker
processes, reached too few times in any one process) is reported as "not reached", never as
survived.

Full run (minutes; prints the table and exits 1 if a reached point was not survived)::

    python -m tests.crash_harness --all

``--points writer.renamed@1 writer.tar_member@3:multi`` runs a few, ``--list`` shows them
all. ``tests/test_crash_safety.py`` runs a CI subset and, with ``CLIPCRAWL_CRASH_FULL=1``,
the whole matrix under pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from types import TracebackType

from tests.crash_snapshot import Snapshot, differences, snapshot

IN_MEMORY, MULTI = "in_memory", "multi_processing"
LEASE_SECONDS = 2.0  # the killed run's lease (when the CLI has --lease_seconds): the rerun waits it out
RUN_TIMEOUT = 300.0  # seconds for one run; a killed worker leaves the launcher hanging until we kill it
_WORKER_KILLED = re.compile(r"Worker subprocess exited with return code (137|-9)\b")
_WORKER_GRACE = 3.0  # seconds the launcher gets to notice a dead worker before we kill its group
_MAX_RERUNS = 3
_CLI = "import sys; from clipcrawl.pipelines.cli import main; sys.exit(main())"
CLIP_BATCH_SIZE = 4  # --clip_batch_size of every run: several scoring batches per process


@dataclasses.dataclass(frozen=True)
class KillPoint:
    """``name`` fires on its ``hit``-th pass in one process; ``mode`` is the DirectRunner mode."""

    name: str
    hit: int = 1
    mode: str = IN_MEMORY

    @property
    def label(self) -> str:
        return f"{self.name}@{self.hit}" + (":multi" if self.mode == MULTI else "")

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        """``name[@hit][:multi]``, as ``label`` writes it."""
        spec, _, mode = text.partition(":")
        name, _, hit = spec.partition("@")
        return cls(name, int(hit or 1), MULTI if mode == "multi" else IN_MEMORY)


def _points(mode: str, *specs: str) -> list[KillPoint]:
    return [dataclasses.replace(KillPoint.parse(spec), mode=mode) for spec in specs]


# The shards: 3 WATs with 16 candidates each (12 images, 8 of them kept) and one with no
# images; 4 kept samples per tar part, so 2 parts per shard. In one process the writer takes
# the shards one after another, so a writer point at hit n lands with n-1 shards done.
# Scoring runs in batches of CLIP_BATCH_SIZE, so every process scores several batches and a
# score point at hit 2 lands with one batch scored (the default 256 makes one batch per bundle).
ALL_POINTS: tuple[KillPoint, ...] = tuple(
    _points(
        IN_MEMORY,
        "coordinator.register.in_transaction@1",
        "coordinator.claim.in_transaction@1",
        "run.after_claim@1",
        "run.before_pipeline@1",
        "extract.shard_start@1",
        "extract.shard_start@3",
        "extract.record@1",
        "extract.record@20",  # inside the second shard read
        "extract.record@48",  # the last candidate of the last shard
        "download.batch_before@1",
        "download.batch_after@3",
        "download.bundle_finished@1",
        "score.batch_before@1",
        "score.batch_after@2",
        "writer.tar_member@1",  # inside the first tar write: a partial temporary tar
        "writer.tar_member@7",  # inside the first shard's second part, its first part staged
        "writer.tar_member@11",  # inside the second shard's tar, the first shard done
        "writer.tar_staged@1",
        "writer.tar_staged@3",
        "writer.parquet_staged@1",
        "writer.stats_staged@2",
        "writer.renamed@1",  # one file of the shard committed, the others still staged
        "writer.renamed@5",
        "writer.after_commit@1",
        "writer.before_mark_done@1",  # files committed, the ledger not told
        "writer.before_mark_done@3",
        "coordinator.complete.in_transaction@1",
        "coordinator.complete.in_transaction@3",
        "writer.after_mark_done@1",
        "writer.after_mark_done@4",  # every shard done, the pipeline not finished
        "run.after_pipeline@1",
        "coordinator.fail.in_transaction@1",
    )
    + _points(
        MULTI,
        "run.before_pipeline@1",
        "extract.record@5",
        "download.batch_after@2",
        "score.batch_before@2",
        "writer.tar_member@3",
        "writer.renamed@2",
        "writer.before_mark_done@1",
        "coordinator.complete.in_transaction@1",
        "run.after_pipeline@1",
    )
)

# CI: inside a tar write (one part already staged), inside the coordinator's complete
# transaction (the shard's files committed, the ledger not yet told; two shards done), and
# during download. A killed Beam worker (":multi") costs about twice as much: full run only.
CI_POINTS: tuple[KillPoint, ...] = tuple(
    KillPoint.parse(spec)
    for spec in ("writer.tar_member@7", "coordinator.complete.in_transaction@3", "download.batch_after@3")
)


@dataclasses.dataclass
class RunOutcome:
    """How one ``clipcrawl run`` ended, as the harness saw it from outside."""

    returncode: int | None
    how: str
    killed: bool  # the armed point fired (launcher SIGKILLed, or a worker)
    seconds: float
    log: str


@dataclasses.dataclass
class Verdict:
    point: KillPoint
    reached: int  # passes through the point in the killed run, over all its processes
    killed_run: RunOutcome | None = None
    reruns: list[RunOutcome] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def fired(self) -> bool:
        return self.killed_run is not None and self.killed_run.killed

    @property
    def survived(self) -> bool:
        return self.fired and not self.problems

    @property
    def result(self) -> str:
        if not self.fired:
            return "not reached"
        return "survived" if self.survived else "FAILED"

    def describe(self) -> str:
        run = self.killed_run
        lines = [f"{self.point.label}: {self.result} (reached {self.reached}x, hit {self.point.hit})"]
        if run is not None:
            lines.append(f"  killed run: {run.how}, {run.seconds:.1f} s")
        lines += [f"  rerun {i}: {rerun.how}, {rerun.seconds:.1f} s" for i, rerun in enumerate(self.reruns, 1)]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def points_in_code() -> set[str]:
    """Every ``faults.point("...")`` name in the installed package's source."""
    found: set[str] = set()
    for package in ("clipcrawl.io", "clipcrawl.transforms", "clipcrawl.pipelines", "clipcrawl.runners"):
        folder = pathlib.Path(importlib.import_module(package).__file__).parent
        for source in folder.glob("*.py"):
            found |= set(re.findall(r"""faults\.point\(\s*["']([\w.]+)["']""", source.read_text(encoding="utf-8")))
    return found


def run_option_exists(flag: str) -> bool:
    """Whether ``clipcrawl run`` knows ``flag`` (options still being added elsewhere plug in)."""
    from clipcrawl.pipelines.options import OPTION_GROUPS

    parser = argparse.ArgumentParser(add_help=False)
    for group in OPTION_GROUPS:
        group._add_argparse_args(parser)
    return any(flag in action.option_strings for action in parser._actions)


class CrashHarness:
    """Inputs, image server, baseline and the kill/rerun/compare cycle, under ``workdir``.

    ``rerun_in_process`` runs the baseline and the reruns inside this process (saves the
    interpreter's import of torch and Beam per run; the CI subset uses it); killed runs are
    always subprocesses. The baseline and the reruns run in one process (``in_memory``)
    whatever the killed run's mode: what is tested is the state the kill left behind.
    """

    def __init__(self, workdir: str | os.PathLike, rerun_in_process: bool = False, echo: bool = False) -> None:
        self.workdir = pathlib.Path(workdir)
        self.rerun_in_process = rerun_in_process
        self.echo = echo
        self._stack = contextlib.ExitStack()
        self._baseline: Snapshot | None = None
        self.lease = run_option_exists("--lease_seconds")

    def __enter__(self) -> CrashHarness:
        from clipcrawl.pipelines.demo import make_demo_inputs
        from clipcrawl.pipelines.image_server import ImageServer

        server = self._stack.enter_context(ImageServer({}))
        self.input_dir = self.workdir / "input"
        make_demo_inputs(server, str(self.input_dir), shards=3)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stack.close()

    def args(self, output: pathlib.Path, mode: str) -> list[str]:
        return [
            f"--input={self.input_dir}/*.warc.wat.gz",
            f"--output={output}",
            "--clip_model=clipcrawl-tiny",
            "--clip_pretrained=",
            "--allow_private_addresses",
            "--per_host_rate=0",
            "--image_size=64",
            "--samples_per_part=4",
            f"--clip_batch_size={CLIP_BATCH_SIZE}",
            "--nickname=crash",
            f"--direct_running_mode={mode}",
            f"--direct_num_workers={2 if mode == MULTI else 1}",
        ]

    @property
    def baseline(self) -> Snapshot:
        """The uninterrupted run every crashed one is compared with (made once)."""
        if self._baseline is None:
            output = self.workdir / "baseline"
            shutil.rmtree(output, ignore_errors=True)
            outcome = self._clean_run(output, IN_MEMORY, "baseline")
            if outcome.returncode != 0:
                raise RuntimeError(f"the uninterrupted run failed ({outcome.how}):\n{outcome.log[-4000:]}")
            self._baseline = snapshot(output)
            problems = differences(self._baseline, self._baseline)
            if problems:
                raise RuntimeError(f"the uninterrupted run is not a clean dataset: {problems}")
        return self._baseline

    def check(self, point: KillPoint) -> Verdict:
        """Kill a fresh run at ``point``, rerun it to completion, compare with the baseline."""
        baseline = self.baseline
        folder = self.workdir / "points" / re.sub(r"[^\w.@-]", "_", point.label)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        output, trace = folder / "out", folder / "trace"
        env = {"CLIPCRAWL_FAULT_POINT": point.name, "CLIPCRAWL_FAULT_HIT": str(point.hit), "CLIPCRAWL_FAULT_TRACE": str(trace)}
        extra = [f"--lease_seconds={LEASE_SECONDS:g}"] if self.lease else []
        killed = run_cli(self.args(output, point.mode) + extra, env, folder / "killed.log")
        reached = trace.read_text().split().count(point.name) if trace.exists() else 0
        verdict = Verdict(point, reached, killed)
        if not killed.killed:
            if killed.returncode != 0:
                verdict.problems.append(f"the armed run failed without being killed: {killed.how}")
            return verdict
        if self.lease:  # the dead run's leases must lapse before a rerun may take its shards
            time.sleep(LEASE_SECONDS + 1.0)
        for attempt in range(1, _MAX_RERUNS + 1):
            rerun = self._clean_run(output, IN_MEMORY, f"rerun-{attempt}")
            verdict.reruns.append(rerun)
            if rerun.returncode == 0 and not _unfinished(output):
                break
        else:
            verdict.problems.append(f"still not finished after {_MAX_RERUNS} reruns: {_unfinished(output)}")
        verdict.problems += differences(baseline, snapshot(output))
        return verdict

    def _clean_run(self, output: pathlib.Path, mode: str, name: str) -> RunOutcome:
        log = output.parent / f"{output.name}-{name}.log"
        if not self.rerun_in_process:
            return run_cli(self.args(output, mode), {}, log)
        from clipcrawl.pipelines import build_dataset

        started = time.monotonic()
        try:
            summary = build_dataset.run(self.args(output, mode))
        except Exception as error:  # noqa: BLE001 - reported as the run's outcome
            return RunOutcome(1, f"raised {type(error).__name__}: {error}", False, time.monotonic() - started, "")
        failed = summary.ledger["shards"]["failed"]
        return RunOutcome(int(failed > 0), f"{failed} shard(s) failed" if failed else "exit 0", False,
                          time.monotonic() - started, "")


def _unfinished(output: pathlib.Path) -> dict[int, str]:
    """Shards of the ledger that are not done, with their status."""
    from clipcrawl.io.coordinator import Coordinator

    coordinator = Coordinator(f"sqlite:///{output}/clipcrawl.sqlite")
    try:
        return {row["shard_no"]: row["status"] for row in coordinator.shards() if row["status"] != "done"}
    finally:
        coordinator.close()


def run_cli(args: Sequence[str], env: dict[str, str], log_path: pathlib.Path, timeout: float = RUN_TIMEOUT) -> RunOutcome:
    """``clipcrawl run`` in its own process group; kills the whole group when it is over.

    A SIGKILLed Beam worker used to leave the launcher waiting forever (the FnApiRunner does
    not retry); the launcher's ``WorkerWatch`` now ends the run itself. Should it ever hang
    again, once the launcher logs the dead worker it gets a few seconds, then its group is
    killed and the outcome says so. ``env`` is added to a copy of this process's environment minus any fault arming.
    """
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("CLIPCRAWL_FAULT_")}
    full_env.update(env)
    started = time.monotonic()
    with open(log_path, "w+b") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _CLI, "run", *args], env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        how, worker_died_at = None, None
        while process.poll() is None:
            now = time.monotonic()
            if worker_died_at is None and _WORKER_KILLED.search(_read(log_path)):
                worker_died_at = now
            if worker_died_at is not None and now - worker_died_at > _WORKER_GRACE:
                how = "worker SIGKILLed; launcher hung, group killed"
                break
            if now - started > timeout:
                how = f"timed out after {timeout:.0f} s, group killed"
                break
            time.sleep(0.2)
        _kill_group(process)
        returncode = process.wait()
    text = _read(log_path)
    worker_killed = bool(_WORKER_KILLED.search(text))
    if how is None:
        if returncode == -signal.SIGKILL:
            how = "SIGKILL (launcher)"
        elif worker_killed:
            how = f"worker SIGKILLed; launcher exit {returncode}"
        else:
            how = f"exit {returncode}"
    killed = returncode == -signal.SIGKILL and "timed out" not in how or worker_killed
    return RunOutcome(returncode, how, killed, time.monotonic() - started, text)


def _read(path: pathlib.Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL what is left of the process group this harness started (Beam's workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def format_table(verdicts: Sequence[Verdict]) -> str:
    rows = [("point", "reached", "killed run", "reruns", "result / what differed")]
    for verdict in verdicts:
        run = verdict.killed_run
        reruns = ", ".join(f"{rerun.how} {rerun.seconds:.0f}s" for rerun in verdict.reruns) or "-"
        detail = verdict.result + ("" if not verdict.problems else ": " + "; ".join(verdict.problems))
        rows.append((verdict.point.label, f"{verdict.reached}/{verdict.point.hit}",
                     f"{run.how} {run.seconds:.0f}s" if run else "-", reruns, detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    survived = sum(verdict.survived for verdict in verdicts)
    reached = sum(verdict.fired for verdict in verdicts)
    lines.append(f"survived {survived}/{len(verdicts)} kill points ({reached} reached, "
                 f"{len(verdicts) - reached} not reached, {reached - survived} failed)")
    return "\n".join(lines)


def iter_checks(harness: CrashHarness, points: Sequence[KillPoint], echo: bool = False) -> Iterator[Verdict]:
    for point in points:
        verdict = harness.check(point)
        if echo:
            print(verdict.describe(), flush=True)
        yield verdict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.crash_harness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="Every kill point (minutes).")
    parser.add_argument("--ci", action="store_true", help="The CI subset only.")
    parser.add_argument("--points", nargs="*", default=[], help="name[@hit][:multi] ...")
    parser.add_argument("--list", action="store_true", help="List the kill points and whether the code has them.")
    parser.add_argument("--workdir", default=None, help="Keep inputs and outputs here (default: a temp dir, removed).")
    parser.add_argument("--in_process_reruns", action="store_true", help="Baseline and reruns in this process.")
    args = parser.parse_args(argv)
    points = list(ALL_POINTS if args.all else CI_POINTS if args.ci else ()) + [KillPoint.parse(p) for p in args.points]
    present = points_in_code()
    if args.list or not points:
        for point in ALL_POINTS:
            print(f"{point.label:45s} {'in code' if point.name in present else 'NOT IN CODE'}")
        return 0
    import tempfile

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="clipcrawl-crash-"))
        harness = stack.enter_context(CrashHarness(workdir, rerun_in_process=args.in_process_reruns))
        started = time.monotonic()
        print(f"inputs in {workdir}; leases: {'--lease_seconds=%g on killed runs' % LEASE_SECONDS if harness.lease else 'no option'}")
        harness.baseline  # noqa: B018 - made first, so a broken pipeline fails before any kill
        verdicts = list(iter_checks(harness, points, echo=True))
        print()
        print(format_table(verdicts))
        print(f"wall time {time.monotonic() - started:.0f} s")
    return 1 if any(verdict.fired and not verdict.survived for verdict in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
