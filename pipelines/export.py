"""``clipcrawl export``: the dataset's rows under LAION's column names, for tools that expect them.

LAION-5B's metadata names its columns ``URL, TEXT, WIDTH, HEIGHT, similarity, LANGUAGE``
(plus ``punsafe``/``pwatermark`` where a safety or watermark model scored the image); the
shard parquets keep img2dataset's spelling. WIDTH and HEIGHT are the image as found on the web
(``original_width``/``original_height``), as in LAION, not the resized copy in the tars. One
shard is read at a time, so memory stays one shard's metadata; local paths and fsspec URLs
(``s3://``, ``gs://``) work on both sides, and the file is committed by rename.
"""

from __future__ import annotations

import argparse
import dataclasses
import posixpath
import re
import sys
import uuid
from collections.abc import Sequence

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from clipcrawl.transforms.status import FINAL_STATUSES, Status

# (LAION name, our column, type), in LAION's order.
LAION_COLUMNS = (
    ("URL", "url", pa.string()),
    ("TEXT", "caption", pa.string()),
    ("WIDTH", "original_width", pa.int32()),
    ("HEIGHT", "original_height", pa.int32()),
    ("similarity", "similarity", pa.float64()),
    ("LANGUAGE", "language", pa.string()),
)
# LAION's probabilities from its safety and watermark classifiers: exported only when the
# dataset has a prompt-tag column for them (the first of these names that exists).
TAG_COLUMNS = (
    ("punsafe", ("punsafe", "tag_unsafe", "tag_nsfw", "unsafe", "nsfw")),
    ("pwatermark", ("pwatermark", "tag_watermark", "watermark")),
)
# Ours, kept so that rows can be joined back to the tars and filtered again.
EXTRA_COLUMNS = (("key", "key", pa.string()), ("status", "status", pa.string()))

_SHARD_PARQUET = re.compile(r"^\d{6}\.parquet$")


class ExportError(ValueError):
    """The dataset cannot be exported (nothing there, a bad status name)."""


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    shards: int
    candidates: int
    rows: int
    columns: tuple[str, ...]
    destination: str


def shard_parquets(output: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The filesystem and the committed ``{shard:06d}.parquet`` files of a dataset, in shard order."""
    fs, root = url_to_fs(output)
    paths = [path for path in fs.glob(posixpath.join(root, "*.parquet")) if _SHARD_PARQUET.match(posixpath.basename(path))]
    return fs, sorted(paths)


def parse_statuses(value: str) -> frozenset[str] | None:
    """``success`` (default), ``all`` (None: no filter) or a comma-separated list of statuses."""
    if value.strip() == "all":
        return None
    statuses = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(statuses - FINAL_STATUSES)
    if not statuses or unknown:
        raise ExportError(f"--status: unknown status {', '.join(unknown) or repr(value)}; "
                          f"use all or some of {', '.join(sorted(FINAL_STATUSES))}")
    return statuses


def laion_schema(source_columns: set[str]) -> tuple[pa.Schema, dict[str, str]]:
    """The export's schema and ``{LAION name: our column}``; tag columns only when the data has them."""
    fields, sources = [], {}
    for name, column, kind in LAION_COLUMNS:
        fields.append(pa.field(name, kind))
        sources[name] = column
    for name, candidates in TAG_COLUMNS:
        found = next((column for column in candidates if column in source_columns), None)
        if found is not None:
            fields.append(pa.field(name, pa.float32()))
            sources[name] = found
    for name, column, kind in EXTRA_COLUMNS:
        fields.append(pa.field(name, kind))
        sources[name] = column
    return pa.schema(fields), sources


def laion_table(table: pa.Table, schema: pa.Schema, sources: dict[str, str], statuses: frozenset[str] | None) -> pa.Table:
    """One shard's rows with the wanted statuses, renamed and cast to ``schema`` (missing columns: null)."""
    if statuses is not None:
        table = table.filter(pc.is_in(table["status"], value_set=pa.array(sorted(statuses), pa.string())))
    columns = []
    for field in schema:
        source = sources[field.name]
        if source in table.column_names:
            columns.append(table[source].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def export_laion(output: str, destination: str, statuses: frozenset[str] | None = frozenset({Status.SUCCESS.value})) -> ExportSummary:
    """Write the rows of every shard of ``output`` with ``statuses`` (None: all) to ``destination``."""
    fs, paths = shard_parquets(output)
    if not paths:
        raise ExportError(f"no shard parquet files ({{shard:06d}}.parquet) under {output}")
    names: dict[str, set[str]] = {}
    for path in paths:
        with fs.open(path, "rb") as source:
            names[path] = set(pq.read_schema(source).names)
    schema, sources = laion_schema(set().union(*names.values()))
    wanted = set(sources.values())
    out_fs, out_path = url_to_fs(destination)
    parent = posixpath.dirname(out_path)
    if parent:
        out_fs.makedirs(parent, exist_ok=True)
    staged = posixpath.join(parent, f".{posixpath.basename(out_path)}.{uuid.uuid4().hex[:12]}.tmp")
    candidates = rows = 0
    try:
        with out_fs.open(staged, "wb") as sink, pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for path in paths:
                with fs.open(path, "rb") as source:
                    shard = pq.read_table(source, columns=sorted(wanted & names[path]))  # no image previews
                candidates += shard.num_rows
                exported = laion_table(shard, schema, sources, statuses)
                rows += exported.num_rows
                writer.write_table(exported)
        out_fs.mv(staged, out_path)
    finally:
        if out_fs.exists(staged):
            out_fs.rm(staged)
    return ExportSummary(len(paths), candidates, rows, tuple(schema.names), destination)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clipcrawl export",
        description="Write a dataset's metadata under LAION's column names "
        "(URL, TEXT, WIDTH, HEIGHT, similarity, LANGUAGE, ...) to one parquet file.",
    )
    parser.add_argument("output", help="The dataset: the --output of clipcrawl run (path or fsspec URL).")
    parser.add_argument("--laion", required=True, metavar="DEST.parquet", help="Where the parquet goes (path or URL).")
    parser.add_argument("--status", default=Status.SUCCESS.value,
                        help="Rows to export: success (the kept samples, default), all, or a comma-separated list.")
    args = parser.parse_args(list(argv))
    try:
        summary = export_laion(args.output, args.laion, parse_statuses(args.status))
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {summary.rows} of {summary.candidates} rows ({summary.shards} shards) to {summary.destination}")
    print(f"columns: {', '.join(summary.columns)}")
    return 0
