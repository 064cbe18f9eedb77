"""The parquet row schema: one row per candidate, every status, no image bytes.

Column names shared with img2dataset keep its spelling (``key, url, caption, status,
error_message, width, height, original_width, original_height, sha256``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

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
    ]
)


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (``Sample.metadata()`` dicts) as a table with exactly ``SCHEMA``'s columns."""
    columns = {field.name: [row[field.name] for row in rows] for field in SCHEMA}
    columns["fetch_time"] = [None if t is None else int(t * 1000) for t in columns["fetch_time"]]
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_rows(rows: Sequence[dict[str, Any]], sink: BinaryIO) -> None:
    pq.write_table(rows_to_table(rows), sink, compression="zstd")
