"""Streaming readers of URL lists (Parquet, CSV, JSON Lines), so existing metadata such as
LAION's or DataComp's parquets can be re-downloaded and re-scored.

Every file is opened through fsspec (local paths, s3://, gs://, https://) and read in
batches, so a list with millions of rows never becomes millions of Python objects at once.
A row whose URL or caption is null is still yielded, with ``""``: the caller records it as
a filtered row, and row order (hence every key) stays exactly the file's.

JSON Lines are parsed with the standard ``json`` module one line at a time, not with
``pyarrow.json.open_json``: that reader fixes each column's type from the first block and
then fails on the common null-then-string caption column, and it cannot turn numbers into
strings, while a line-by-line parse has neither problem and reports the exact line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from clipcrawl.io.inputs import InputError

URL_LIST_SUFFIXES: tuple[str, ...] = (".parquet", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz")

# Auto-detected names, first match wins: img2dataset/DataComp spelling, then LAION's.
URL_COLUMNS = ("url", "URL")
CAPTION_COLUMNS = ("caption", "text", "TEXT")
PAGE_URL_COLUMNS = ("page_url", "PAGE_URL")

_PARQUET_BATCH_ROWS = 65_536
_CSV_BLOCK_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class UrlRow:
    """One row of a URL list; ``""`` stands for a null URL or caption, never a dropped row."""

    url: str
    caption: str
    page_url: str | None  # None when the file has no page-url column or the cell is empty


@dataclasses.dataclass(frozen=True)
class _Columns:
    url: str
    caption: str
    page_url: str | None

    @property
    def names(self) -> list[str]:
        """The columns to read, each once (two roles may share a column)."""
        return list(dict.fromkeys(name for name in (self.url, self.caption, self.page_url) if name))


def is_url_list(uri: str) -> bool:
    return uri.lower().endswith(URL_LIST_SUFFIXES)


def iter_url_rows(
    uri: str,
    url_column: str | None = None,
    caption_column: str | None = None,
    page_url_column: str | None = None,
) -> Iterator[UrlRow]:
    """Every row of one URL list, in file order; given column names override detection.

    An unknown suffix fails at once; a missing column or malformed content fails (as
    ``InputError``) when iteration reaches it, since only then is the file opened.
    """
    given = (url_column, caption_column, page_url_column)
    lowered = uri.lower()
    if lowered.endswith(".parquet"):
        return _iter_parquet(uri, given)
    if lowered.endswith((".csv", ".csv.gz")):
        return _iter_csv(uri, given)
    if lowered.endswith((".jsonl", ".jsonl.gz")):
        return _iter_jsonl(uri, given)
    raise InputError(f"{uri}: not a URL list (expected one of {', '.join(URL_LIST_SUFFIXES)})")


def _choose_columns(uri: str, found: Sequence[str], given: tuple[str | None, str | None, str | None]) -> _Columns:
    """The columns to use, or an error that says what exists and which option to set."""
    url_column, caption_column, page_url_column = given
    url = _pick(uri, found, url_column, URL_COLUMNS, "URL", "--url_column")
    caption = _pick(uri, found, caption_column, CAPTION_COLUMNS, "caption", "--caption_column")
    if page_url_column is not None:
        page_url: str | None = _pick(uri, found, page_url_column, (), "page URL", "--page_url_column")
    else:
        page_url = next((name for name in PAGE_URL_COLUMNS if name in found), None)
    return _Columns(url, caption, page_url)


def _pick(uri: str, found: Sequence[str], given: str | None, candidates: Sequence[str], role: str, option: str) -> str:
    if given is not None:
        if given in found:
            return given
        raise InputError(f"{uri}: {role} column {given!r} ({option}) is not in the file; columns found: {list(found)}")
    for name in candidates:
        if name in found:
            return name
    raise InputError(
        f"{uri}: no {role} column (looked for {', '.join(candidates)}); columns found: {list(found)}; "
        f"set {option} to the column that holds it"
    )


def _iter_parquet(uri: str, given: tuple[str | None, str | None, str | None]) -> Iterator[UrlRow]:
    with fsspec.open(uri, "rb") as stream:
        parquet = pq.ParquetFile(stream)
        columns = _choose_columns(uri, parquet.schema_arrow.names, given)
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns.names):
            yield from _batch_rows(batch, columns)


def _iter_csv(uri: str, given: tuple[str | None, str | None, str | None]) -> Iterator[UrlRow]:
    """Two opens: the header names first, then a reader that parses only the chosen columns,
    all as strings, so that a later block cannot break type inference of a column we ignore."""
    read_options = pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES, use_threads=False)
    # Captions may hold quoted newlines; use_threads=False makes pyarrow's errors name the row.
    parse_options = pa_csv.ParseOptions(newlines_in_values=True)
    with fsspec.open(uri, "rb", compression="infer") as stream:
        if not stream.read(1):
            return
        stream.seek(0)
        found = _csv_call(uri, lambda: pa_csv.open_csv(stream, read_options, parse_options).schema.names)
    columns = _choose_columns(uri, found, given)
    convert_options = pa_csv.ConvertOptions(
        include_columns=columns.names,
        column_types={name: pa.string() for name in columns.names},
    )
    with fsspec.open(uri, "rb", compression="infer") as stream:
        reader = _csv_call(uri, lambda: pa_csv.open_csv(stream, read_options, parse_options, convert_options))
        while (batch := _csv_call(uri, lambda: _next_or_none(reader))) is not None:
            yield from _batch_rows(batch, columns)


def _next_or_none(reader: pa_csv.CSVStreamingReader) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def _csv_call(uri: str, call: Any) -> Any:
    """pyarrow's parse errors say 'Row #N: ...' but not which file: add it."""
    try:
        return call()
    except pa.ArrowInvalid as exc:
        raise InputError(f"{uri}: malformed CSV: {exc}") from exc


def _batch_rows(batch: pa.RecordBatch, columns: _Columns) -> Iterator[UrlRow]:
    values = {name: batch.column(name).to_pylist() for name in columns.names}
    urls, captions = values[columns.url], values[columns.caption]
    pages = values[columns.page_url] if columns.page_url else [None] * batch.num_rows
    for url, caption, page in zip(urls, captions, pages):
        yield UrlRow(_text(url), _text(caption), _text(page) or None)


def _iter_jsonl(uri: str, given: tuple[str | None, str | None, str | None]) -> Iterator[UrlRow]:
    """Columns are chosen from the first object's keys; a key missing from a later line is null."""
    columns: _Columns | None = None
    with fsspec.open(uri, "rt", compression="infer", encoding="utf-8", errors="replace") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = _json_object(uri, line_no, line)
            if columns is None:
                columns = _choose_columns(uri, list(record), given)
            page = _text(record.get(columns.page_url)) if columns.page_url else ""
            yield UrlRow(_text(record.get(columns.url)), _text(record.get(columns.caption)), page or None)


def _json_object(uri: str, line_no: int, line: str) -> Mapping[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{uri}: line {line_no} is not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise InputError(f"{uri}: line {line_no} is a JSON {type(record).__name__}, not an object")
    return record


def _text(value: Any) -> str:
    """Cell value as text: null (and pandas' NaN null) -> "", numbers -> their str()."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
