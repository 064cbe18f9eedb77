"""``clipcrawl status``: what the shard ledger says (Crawling@Home's dashboard, in a terminal).

Shards by status, pairs extracted/downloaded/kept, throughput over the last window, ETA,
running leases with their age, the last errors and the leaderboard by nickname; ``--json``
gives the same for machines. Passwords in the ledger URL never reach the output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

EXIT_USAGE = 2
EXIT_LEDGER = 1
ENV_COORDINATOR = "CLIPCRAWL_COORDINATOR"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipcrawl status", description="Progress of the shard ledger.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--coordinator", help=f"SQLAlchemy URL of the ledger (default: ${ENV_COORDINATOR}).")
    where.add_argument("--output", help="A local output directory (its default SQLite ledger).")
    parser.add_argument("--json", action="store_true", help="Print JSON for machines.")
    parser.add_argument("--window", type=float, default=60.0, help="Minutes of finished shards the rate uses.")
    parser.add_argument("--max_attempts", type=int, default=3, help="Attempts after which a failed shard is parked.")
    parser.add_argument("--errors", type=int, default=10, help="How many recent errors to list.")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from clipcrawl.io.coordinator import Coordinator, mask_secrets, mask_url
    from clipcrawl.io.ledger_dashboard import dashboard
    from clipcrawl.pipelines.options import default_coordinator_url

    url = args.coordinator or (default_coordinator_url(args.output) if args.output else os.environ.get(ENV_COORDINATOR))
    if not url:
        print(f"error: give --coordinator URL or --output DIR (or set {ENV_COORDINATOR})", file=sys.stderr)
        return EXIT_USAGE
    if url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
        print(f"error: no ledger at {url}", file=sys.stderr)
        return EXIT_USAGE
    try:
        coordinator = Coordinator(url)
        try:
            report = dashboard(coordinator, window_seconds=args.window * 60, max_attempts=args.max_attempts,
                               errors=args.errors)
        finally:
            coordinator.close()
    except Exception as error:  # a driver error may quote the URL: mask before printing
        print(f"error: cannot read the ledger at {mask_url(url)}: {mask_secrets(str(error), url)}", file=sys.stderr)
        return EXIT_LEDGER
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")
    return f"-{text}" if seconds < 0 else text


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  " + "  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]


def render(report: dict[str, Any]) -> str:
    """The terminal dashboard for one ``dashboard()`` report."""
    shards, rate = report["shards"], report["throughput"]
    lines = [
        f"coordinator:  {report['coordinator']}  (schema v{report['schema_version']})",
        f"shards:       {sum(shards.values())} registered: " + ", ".join(f"{n} {s}" for s, n in shards.items()),
    ]
    if shards["failed"] or report["expired_leases"]:
        lines.append(
            f"              failed: {report['failed_parked']} parked after {report['max_attempts']} attempts, "
            f"{report['failed_retryable']} to retry; {report['expired_leases']} running with an expired lease"
        )
    lines += [
        f"pairs:        {report['pairs_extracted']} extracted",
        f"images:       {report['images_downloaded']} downloaded",
        f"kept:         {report['pairs_kept']}",
        f"written:      {report['bytes_written']} bytes",
        f"throughput:   {rate['shards_per_minute']:g} shards/min, {rate['pairs_kept_per_minute']:g} pairs kept/min "
        f"({rate['shards_done']} shards done in the last {_duration(rate['window_seconds'])}, "
        f"over {_duration(rate['span_seconds'])} of work)",
        f"eta:          {_duration(report['eta_seconds']) if report['eta_seconds'] is not None else 'unknown'}"
        f" for {report['remaining_shards']} shard(s) to go",
    ]
    if report["running"]:
        lines.append(f"running leases ({len(report['running'])}):")
        lines += _table(
            ["shard", "age", "lease left", "attempt", "worker", "input"],
            [[f"{r['shard_no']:06d}", _duration(r["age_seconds"]),
              "expired" if r["expired"] else _duration(r["lease_left_seconds"]), r["attempts"], r["worker"], r["uri"]]
             for r in report["running"]],
        )
    if report["errors"]:
        lines.append(f"last errors ({len(report['errors'])}):")
        lines += _table(
            ["shard", "status", "attempts", "when", "error"],
            [[f"{e['shard_no']:06d}", e["status"], e["attempts"], e["at"] or "-", (e["error"].splitlines() or [""])[0][:120]]
             for e in report["errors"]],
        )
    if report["leaderboard"]:
        lines.append("leaderboard:")
        lines += _table(
            ["#", "nickname", "shards", "pairs kept", "last done"],
            [[row["rank"], row["nickname"], row["shards"], row["pairs_kept"], row["last_done_at"] or "-"]
             for row in report["leaderboard"]],
        )
    return "\n".join(lines)
