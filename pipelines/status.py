"""``clipcrawl status``: what the shard ledger says (Crawling@Home's dashboard, in a terminal)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

EXIT_USAGE = 2


def main(argv: Sequence[str]) -> int:
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
