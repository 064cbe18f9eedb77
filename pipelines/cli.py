"""The ``clipcrawl`` command: ``run``, ``demo`` and ``status``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

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
    from clipcrawl.pipelines import build_dataset

    started = time.monotonic()
    summary = build_dataset.run(argv)
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


def cmd_status(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="clipcrawl status", description="Summary of the shard ledger.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--coordinator", help="SQLAlchemy URL of the ledger.")
    where.add_argument("--output", help="A local output directory (its default SQLite ledger).")
    parser.add_argument("--json", action="store_true", help="Print JSON for machines.")
    args = parser.parse_args(argv)
    from clipcrawl.io.coordinator import Coordinator, mask_url
    from clipcrawl.pipelines.options import default_coordinator_url

    url = args.coordinator or default_coordinator_url(args.output)
    if url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
        print(f"error: no ledger at {url}", file=sys.stderr)
        return EXIT_USAGE
    coordinator = Coordinator(url)
    try:
        summary = coordinator.summary()
    finally:
        coordinator.close()
    if args.json:
        print(json.dumps({"coordinator": mask_url(url), **summary}, indent=2))
        return 0
    shards = summary["shards"]
    print(f"coordinator:  {mask_url(url)}")
    print(f"shards:       {sum(shards.values())} registered: " + ", ".join(f"{n} {s}" for s, n in shards.items()))
    print(f"pairs:        {summary['pairs_extracted']} extracted")
    print(f"images:       {summary['images_downloaded']} downloaded")
    print(f"kept:         {summary['pairs_kept']}")
    print(f"written:      {summary['bytes_written']} bytes")
    return 0


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: clipcrawl {run,demo,status} [options]  (clipcrawl COMMAND --help for each)")
        return 0 if argv and argv[0] in ("-h", "--help") else EXIT_USAGE
    logging.basicConfig(level=os.environ.get("CLIPCRAWL_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    from clipcrawl.pipelines.options import OptionsError

    try:
        return COMMANDS[argv[0]](argv[1:])
    except (OptionsError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
