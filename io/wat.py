"""Streaming reader of WAT files (gzip member per record, or plain), local or any fsspec URL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import fsspec
from warcio.archiveiterator import ArchiveIterator

JSON_CONTENT_TYPE = "application/json"


@dataclasses.dataclass(frozen=True)
class WatRecord:
    """The parts of a WAT metadata record that extraction needs."""

    target_uri: str
    record_id: str
    payload: bytes


def iter_wat_metadata(uri: str) -> Iterator[WatRecord]:
    """Yield the JSON metadata records of one WAT file, one record in memory at a time.

    warcio detects gzip itself (per-record members as Common Crawl writes them, or one
    stream) and also reads plain WARC, so the file is opened without fsspec compression.
    """
    with fsspec.open(uri, "rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type != "metadata":
                continue
            content_type = record.rec_headers.get_header("Content-Type") or ""
            if not content_type.startswith(JSON_CONTENT_TYPE):
                continue
            yield WatRecord(
                target_uri=_target_uri(record.rec_headers.get_header("WARC-Target-URI")),
                record_id=record.rec_headers.get_header("WARC-Record-ID") or "",
                payload=record.content_stream().read(),
            )


def _target_uri(value: str | None) -> str:
    """WARC-Target-URI without the angle brackets some writers (wget) put around it."""
    value = (value or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value
