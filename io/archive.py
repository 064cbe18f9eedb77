"""The records extraction reads from a WAT or WARC file: WAT JSON metadata and HTML responses.

One reader for both kinds of file: a WAT holds ``metadata`` records whose block is JSON, a
WARC holds ``response`` records whose block is an HTTP message (decoded by fastwarc or warcio:
chunked transfer, gzip/br content encoding).

Two paths, one result. The careful path frames records itself (``warc_framing``: a
malformed record is reported and reading goes on) over zlib. The fast path ("fastwarc", the
default when installed) lets fastwarc's Rust parser read a well-formed file; each record is
handed on only once the next one has parsed, and at the first error the file is read again
on the careful path, past the records already handed on. So a damaged file gives the same
records and the same ``BadRecord``s on both paths (tests/test_archive.py reads every fixture
and every kind of damage both ways), and a clean file is read at fastwarc's speed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
from collections.abc import Callable, Iterator
from typing import Any

import fsspec

from clipcrawl.io.decompress import is_gzip, iter_members, iter_plain
from clipcrawl.io.warc_framing import MAX_RECORD_BYTES, BadRecord, Frame, iter_frames

READERS = ("auto", "fastwarc", "warcio")
WAT_JSON = "wat"
HTML = "html"
_HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclasses.dataclass(frozen=True)
class ArchiveRecord:
    """A record extraction can use: WAT JSON, or the decoded HTML body of a response."""

    kind: str  # WAT_JSON or HTML
    target_uri: str
    record_id: str
    payload: bytes
    content_type: str = ""  # the HTTP Content-Type of an HTML response


def resolve_reader(reader: str) -> str:
    """``auto`` -> fastwarc when importable, else warcio; a missing fastwarc asked for by name is an error."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {', '.join(READERS)}, got {reader!r}")
    has_fastwarc = importlib.util.find_spec("fastwarc") is not None
    if reader == "auto":
        return "fastwarc" if has_fastwarc else "warcio"
    if reader == "fastwarc" and not has_fastwarc:
        raise ValueError("reader fastwarc is not installed: pip install 'clipcrawl[fast]' or use warcio")
    return reader


WatFilter = Callable[[bytes], bool]
# Yielded in place of a WAT record the caller's ``wat_filter`` turned down: counted, not built.
SKIPPED = object()


def iter_archive(
    uri: str, reader: str = "auto", wat_filter: WatFilter | None = None
) -> Iterator[ArchiveRecord | BadRecord | object]:
    """WAT metadata and HTML response records of one file, plus a ``BadRecord`` per malformed one.

    ``wat_filter(block)`` False turns a WAT JSON record into ``SKIPPED`` before any object is
    made for it: most WAT records hold no image link, and on a whole file the saving shows.
    """
    reader = resolve_reader(reader)
    if reader == "fastwarc":
        yield from _fast(uri, wat_filter)
    else:
        yield from _careful(uri, reader, wat_filter)


def _careful(
    uri: str, reader: str, wat_filter: WatFilter | None, offset: int = 0, skip: int = 0
) -> Iterator[ArchiveRecord | BadRecord | object]:
    """Frame records ourselves from ``offset`` (a record or gzip-member start); drop the first ``skip``."""
    with fsspec.open(uri, "rb") as stream:
        head = stream.read(2)
        stream.seek(offset)
        chunks = iter_members(stream, offset) if is_gzip(head) else iter_plain(stream)
        base = 0 if is_gzip(head) else offset  # framer offsets: into the decompressed stream
        for number, frame in enumerate(iter_frames(chunks, base)):
            if number < skip:
                continue
            item = frame if isinstance(frame, BadRecord) else _classify(frame, reader, wat_filter)
            if item is not None:
                yield item


class _LeaveFastPath(Exception):
    """fastwarc read something it should have refused (an unknown record type, a short block)."""


def _fast(uri: str, wat_filter: WatFilter | None) -> Iterator[ArchiveRecord | BadRecord | object]:
    """fastwarc's parser while the file is well-formed, then the careful path (see module doc).

    The last record fastwarc parsed is held back: the careful path re-reads it from its
    offset, whether fastwarc failed on the next one or reached the end (where fastwarc stops
    quietly on a cut record or header, and the careful path says so). fastwarc splits header
    lines on CRLF only, so a record with LF line endings comes out with an ``unknown`` type;
    and it hands on a block cut by the end of the file. Both leave the fast path. The loop is
    written out flat: it runs once per record, and a record turned down by ``wat_filter``
    costs no header lookup.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    unknown, metadata, response = WarcRecordType.unknown, WarcRecordType.metadata, WarcRecordType.response
    handed_on = 0
    pending: tuple[int, ArchiveRecord | BadRecord | object | None] | None = None  # (offset, item)
    try:
        with fsspec.open(uri, "rb") as stream:
            for record in ArchiveIterator(stream, parse_http=False, fsspec_args=False):
                offset, record_type, length = record.stream_pos, record.record_type, record.content_length
                block = record.reader.read() if length <= MAX_RECORD_BYTES else b""
                if record_type == unknown or (length != len(block) and length <= MAX_RECORD_BYTES):
                    raise _LeaveFastPath
                if length > MAX_RECORD_BYTES:  # as the careful path says it; fastwarc skips the block
                    item: ArchiveRecord | BadRecord | object | None = BadRecord(
                        offset, "too_large", f"record of {length} bytes is over the {MAX_RECORD_BYTES}-byte limit",
                        record.headers.get("WARC-Record-ID") or "")
                elif record_type == metadata and wat_filter is not None and not wat_filter(block):
                    item = SKIPPED
                elif record_type == metadata or record_type == response:  # the filter has passed: not again
                    item = _classify(Frame(offset, _LazyHeaders(record.headers), block), "fastwarc", None)
                else:
                    item = None
                if pending is not None:
                    if offset <= pending[0]:  # one gzip stream for the whole file: no offsets
                        raise _LeaveFastPath
                    if pending[1] is not None:
                        yield pending[1]
                    handed_on += 1
                pending = (offset, item)
    except (OSError, _LeaveFastPath):
        pass
    yield from _resume(uri, wat_filter, pending[0] if pending is not None else 0, handed_on)


class _LazyHeaders(dict):
    """The framer's lower-cased header dict, filled from fastwarc's map only when asked."""

    def __init__(self, source: Any) -> None:
        super().__init__()
        self._source = source

    def __missing__(self, name: str) -> str:
        value = self._source.get(_CANONICAL.get(name, name)) or ""
        self[name] = value
        return value

    def get(self, name: str, default: str = "") -> str:  # type: ignore[override]
        return self[name] or default


_CANONICAL = {name.lower(): name for name in (
    "WARC-Type", "Content-Type", "WARC-Target-URI", "WARC-Record-ID", "WARC-Identified-Payload-Type",
)}


def _resume(
    uri: str, wat_filter: WatFilter | None, offset: int, handed_on: int
) -> Iterator[ArchiveRecord | BadRecord | object]:
    """The careful path from ``offset`` when a record or member starts there, else from the top."""
    with fsspec.open(uri, "rb") as stream:
        head = stream.read(2)
        stream.seek(offset)
        start = stream.read(len(b"WARC/"))
    if start.startswith(head[:2]) if is_gzip(head) else start == b"WARC/":
        yield from _careful(uri, "fastwarc", wat_filter, offset=offset)
    else:
        yield from _careful(uri, "fastwarc", wat_filter, skip=handed_on)


def target_uri(value: str | None) -> str:
    """WARC-Target-URI without the angle brackets some writers (wget) put around it."""
    value = (value or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


def _wanted(warc_type: str, content_type: str) -> bool:
    """WAT JSON metadata, or an HTTP response (HTML or not is known only after decoding)."""
    if warc_type == "metadata":
        return content_type.startswith("application/json")
    return warc_type == "response" and content_type.startswith("application/http")


def _classify(frame: Frame, reader: str, wat_filter: WatFilter | None) -> ArchiveRecord | BadRecord | object | None:
    warc_type = frame.header("WARC-Type")
    if warc_type == "metadata" and wat_filter is not None and not wat_filter(frame.block):
        return SKIPPED  # before the Content-Type test: the fast path skips without reading headers
    if not _wanted(warc_type, frame.header("Content-Type")):
        return None
    uri = target_uri(frame.header("WARC-Target-URI"))
    record_id = frame.header("WARC-Record-ID")
    if warc_type == "metadata":
        return ArchiveRecord(WAT_JSON, uri, record_id, frame.block)
    try:
        http_type, body = _decode_http(frame, reader)
    except Exception as error:  # noqa: BLE001 - any parser failure is this record's problem only
        return BadRecord(frame.offset, "bad_http", f"unreadable HTTP response: {type(error).__name__}: {error}", record_id)
    if not _is_html(http_type or frame.header("WARC-Identified-Payload-Type"), body):
        return None
    return ArchiveRecord(HTML, uri, record_id, body, http_type or "")


def _is_html(content_type: str, body: bytes) -> bool:
    if content_type:
        return content_type.split(";")[0].strip().lower() in _HTML_TYPES
    start = body[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _single_record(frame: Frame) -> bytes:
    """The frame as a minimal one-record WARC, for the libraries' HTTP parsers."""
    head = (
        "WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://record.invalid/\r\n"
        "WARC-Date: 2000-01-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000000>\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(frame.block)}\r\n\r\n"
    ).encode("ascii")
    return head + frame.block + b"\r\n\r\n"


def _decode_http(frame: Frame, reader: str) -> tuple[str | None, bytes]:
    """(HTTP Content-Type, body with transfer and content encodings removed)."""
    raw = io.BytesIO(_single_record(frame))
    if reader == "fastwarc":
        from fastwarc.warc import ArchiveIterator, WarcRecordType

        for record in ArchiveIterator(raw, record_types=WarcRecordType.response, auto_decode="all",
                                      fsspec_args=False):
            return record.http_headers.get("Content-Type"), record.reader.read()
    else:
        from warcio.archiveiterator import ArchiveIterator

        for record in ArchiveIterator(raw):
            return record.http_headers.get_header("Content-Type"), record.content_stream().read()
    raise ValueError("no HTTP message in the record")
