"""``clipcrawl report OUTPUT``: one self-contained HTML page about a dataset output.

For people building a dataset who want to look: which captions were kept, what was rejected
and why, how similarity is distributed, how fast shards went. Reads the shard files only
(stats json, parquet, the start of a few tars), from local disk or any fsspec URL (s3://...).
"""

from __future__ import annotations

import argparse
import posixpath
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipcrawl.pipelines.report_data import ReportData

EXIT_USAGE = 2
REPORT_NAME = "report.html"


def build_report(
    output: str, threshold: float | None = None, grid: int = 24, max_shards: int | None = None
) -> tuple[str, ReportData]:
    """The report page for ``output`` and the data behind it."""
    from clipcrawl.pipelines.report_data import gather
    from clipcrawl.pipelines.report_html import render

    data = gather(output, threshold=threshold, grid=grid, max_shards=max_shards)
    return render(data), data


def write_report(page: str, destination: str) -> str:
    """Writes ``page`` to a local path or fsspec URL; returns where it went."""
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(destination)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as sink:
        sink.write(page.encode("utf-8"))
    return fs.unstrip_protocol(path) if "://" in destination else path


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clipcrawl report",
        description="Write a self-contained HTML report (plots, tables, sample images) of a clipcrawl output.",
    )
    parser.add_argument("output", help="The dataset output directory or fsspec URL (what --output was for the run).")
    parser.add_argument("--out", default=None, help=f"Where the HTML goes (path or URL); default OUTPUT/{REPORT_NAME}.")
    parser.add_argument("--threshold", type=float, default=None,
                        help="CLIP threshold to mark; default: the one the run wrote into its below_threshold rows.")
    parser.add_argument("--grid", type=int, default=24, help="Kept and rejected sample images shown, each (default 24).")
    parser.add_argument("--max_shards", type=int, default=None,
                        help="Read the rows of at most this many shards, evenly spread (stats of all are read).")
    args = parser.parse_args(argv)
    if args.grid < 0 or (args.max_shards is not None and args.max_shards < 1):
        print("error: --grid must be >= 0 and --max_shards >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        page, data = build_report(args.output, args.threshold, args.grid, args.max_shards)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    destination = args.out or posixpath.join(args.output.rstrip("/"), REPORT_NAME)
    where = write_report(page, destination)
    total, kept = data.candidates, data.status_counts.get("success", 0)
    rate = f"{100 * kept / total:.1f}%" if total else "–"
    print(f"report:       {where} ({len(page.encode('utf-8')) / 1024:.0f} KB)")
    print(f"shards:       {len(data.shards)}; candidates {total}, kept {kept} ({rate})")
    for problem in data.problems:
        print(f"note:         {problem}")
    return 0
