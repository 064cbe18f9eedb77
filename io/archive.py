"""The records extraction reads from a WAT or WARC file: WAT JSON metadata and HTML responses.

One reader for both kinds of file: a WAT holds ``metadata`` records whose block is JSON, a
WARC holds ``response`` records whose block is an HTTP message. Records are framed by
``warc_framing`` (so a malformed record is reported, not fatal); the gzip stream is inflated
by fastwarc when it is installed ("auto") and by Python's zlib otherwise; the HTTP message of
a response (chunked transfer, gzip/br content encoding) is decoded by fastwarc or warcio.
Both readers give the same records: the tests read every fixture with both.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
from collections.abc import Iterator

import fsspec

from clipcrawl.io.decompress import is_gzip, iter_fast, iter_members, iter_plain
from clipcrawl.io.warc_framing import BadRecord, Frame, iter_frames

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


def iter_archive(uri: str, reader: str = "auto") -> Iterator[ArchiveRecord | BadRecord]:
    """WAT metadata and HTML response records of one file, plus a ``BadRecord`` per malformed one."""
    reader = resolve_reader(reader)
    with fsspec.open(uri, "rb") as stream:
        head = stream.read(2)
        stream.seek(0)
        if not is_gzip(head):
            chunks = iter_plain(stream)
        elif reader == "fastwarc":
            chunks = iter_fast(stream, reopen=lambda: fsspec.open(uri, "rb"))
        else:
            chunks = iter_members(stream)
        for frame in iter_frames(chunks):
            if isinstance(frame, BadRecord):
                yield frame
                continue
            record = _classify(frame, reader)
            if record is not None:
                yield record


def target_uri(value: str | None) -> str:
    """WARC-Target-URI without the angle brackets some writers (wget) put around it."""
    value = (value or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


def _classify(frame: Frame, reader: str) -> ArchiveRecord | BadRecord | None:
    warc_type = frame.header("WARC-Type")
    content_type = frame.header("Content-Type")
    uri = target_uri(frame.header("WARC-Target-URI"))
    record_id = frame.header("WARC-Record-ID")
    if warc_type == "metadata" and content_type.startswith("application/json"):
        return ArchiveRecord(WAT_JSON, uri, record_id, frame.block)
    if warc_type != "response" or not content_type.startswith("application/http"):
        return None
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
