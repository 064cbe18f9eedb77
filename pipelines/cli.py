"""The ``clipcrawl`` command: ``run`` and ``demo`` here, the other commands in their own modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from clipcrawl.io.inputs import InputError

EXIT_USAGE = 2

_RUN_EPILOG = """\
Beam's own options pass through, e.g. --runner=DataflowRunner --project=... --region=...,
or --direct_num_workers=4. Without --runner, clipcrawl runs locally on Beam's portable
direct engine (FnApiRunner) with one worker process per core (up to 8).
"""


def _run_help_parser() -> argparse.ArgumentParser:
    from clipcrawl.pipelines.options import OPTION_GROUPS

    parser = argparse.ArgumentParser(
        prog="clipcrawl run",
        description="Build a CLIP-filtered image-text dataset from WAT shards.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for group in OPTION_GROUPS:
        group._add_argparse_args(parser)
    return parser


def _print_summary(summary, elapsed: float) -> None:
    ledger = summary.ledger
    shards = ledger["shards"]
    print(f"dataset:      {summary.output_dir}")
    print(f"coordinator:  {summary.coordinator_url}")
    print(f"this run:     {len(summary.shards_processed)} shard(s) processed in {elapsed:.1f} s")
    print(
        f"shards:       {shards['done']} done, {shards['pending']} pending, "
        f"{shards['running']} running, {shards['failed']} failed"
    )
    print(
        f"pairs:        {ledger['pairs_extracted']} extracted, {ledger['images_downloaded']} downloaded, "
        f"{ledger['pairs_kept']} kept"
    )


def cmd_run(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        _run_help_parser().print_help()
        return 0
    if any(arg == "--watch" or arg.startswith("--watch=") for arg in argv):
        from clipcrawl.pipelines import watch

        return watch.main(argv)
    from clipcrawl.io.leases import WorkerDied
    from clipcrawl.pipelines import build_dataset

    started = time.monotonic()
    try:
        summary = build_dataset.run(argv)
    except WorkerDied as death:  # Beam's own report of the worker is already on stderr
        print(f"error: {death}; this run's unfinished shards are claimable again", file=sys.stderr)
        return 1
    _print_summary(summary, time.monotonic() - started)
    return 0 if summary.ledger["shards"]["failed"] == 0 else 1


def cmd_demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clipcrawl demo",
        description="Offline demo: loopback image server, generated WATs, tiny CLIP, SQLite.",
    )
    parser.add_argument("--root", default="clipcrawl-demo", help="Where the demo's input and dataset go.")
    args, beam_args = parser.parse_known_args(argv)
    from clipcrawl.pipelines import demo

    started = time.monotonic()
    summary = demo.run_demo(os.path.abspath(args.root), beam_args)
    _print_summary(summary, time.monotonic() - started)
    return 0 if summary.ledger["shards"]["failed"] == 0 else 1


# Each command is ``module:function`` taking argv and returning the exit code; modules are
# imported only when their command runs, so ``clipcrawl --help`` stays fast.
COMMANDS = {
    "run": "clipcrawl.pipelines.cli:cmd_run",
    "demo": "clipcrawl.pipelines.cli:cmd_demo",
    "status": "clipcrawl.pipelines.status:main",
    "report": "clipcrawl.pipelines.report:main",
    "export": "clipcrawl.pipelines.export:main",
}


def _command(name: str) -> Callable[[Sequence[str]], int]:
    module, function = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: clipcrawl {{{','.join(COMMANDS)}}} [options]  (clipcrawl COMMAND --help for each)")
        return 0 if argv and argv[0] in ("-h", "--help") else EXIT_USAGE
    logging.basicConfig(level=os.environ.get("CLIPCRAWL_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    from clipcrawl.pipelines.options import OptionsError

    try:
        return _command(argv[0])(argv[1:])
    except (OptionsError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
