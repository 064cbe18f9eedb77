"""The parquet row schema: one row per candidate, every status, no image bytes.

Column names shared with img2dataset keep its spelling (``key, url, caption, status,
error_message, width, height, original_width, original_height, sha256``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from clipcrawl.transforms.clip_tags import TAG_COLUMN_PREFIX

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard_no", pa.int32(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("page_url", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_key", pa.string()),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error_message", pa.string()),
        pa.field("image_format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("sha256", pa.string()),
        pa.field("similarity", pa.float64()),
        pa.field("http_status", pa.int32()),
        pa.field("final_url", pa.string()),
        pa.field("fetch_time", pa.timestamp("ms", tz="UTC")),
        pa.field("fetch_seconds", pa.float64()),
        pa.field("downloaded_bytes", pa.int64()),
        pa.field("preview", pa.binary()),  # small JPEG of some below_threshold images (the report's)
    ]
)

# Columns a row dict may leave out (``Sample.metadata()`` has no binary fields): null then.
OPTIONAL_COLUMNS = frozenset({"preview"})


def schema_for(tag_names: Sequence[str] = ()) -> pa.Schema:
    """``SCHEMA`` plus a float32 ``tag_{name}`` column per configured prompt tag (``--clip_tags``),
    in the configured order: fixed by the run's options, so every shard of a run has the same columns."""
    return pa.schema([*SCHEMA, *(pa.field(f"{TAG_COLUMN_PREFIX}{name}", pa.float32()) for name in tag_names)])


def rows_to_table(rows: Sequence[dict[str, Any]], tag_names: Sequence[str] = ()) -> pa.Table:
    """Rows (``Sample.metadata()`` dicts) as a table with exactly ``schema_for(tag_names)``'s columns.

    A row's ``tags`` dict fills the tag columns; rows never scored (no ``tags``) get nulls.
    """
    columns = {
        field.name: [row.get(field.name) if field.name in OPTIONAL_COLUMNS else row[field.name] for row in rows]
        for field in SCHEMA
    }
    columns["fetch_time"] = [None if t is None else int(t * 1000) for t in columns["fetch_time"]]
    for name in tag_names:
        columns[f"{TAG_COLUMN_PREFIX}{name}"] = [(row.get("tags") or {}).get(name) for row in rows]
    return pa.Table.from_pydict(columns, schema=schema_for(tag_names))


def write_rows(rows: Sequence[dict[str, Any]], sink: BinaryIO, tag_names: Sequence[str] = ()) -> None:
    pq.write_table(rows_to_table(rows, tag_names), sink, compression="zstd")
