"""A strict WARC record framer that reports a malformed record and goes on with the next one.

warcio and fastwarc read well-formed files fast, but at a malformed record they either stop
(fastwarc, and warcio on a wrong Content-Length) or read it leniently (warcio reads header
lines that end in LF), so the two disagree exactly where a dataset builder needs an answer.
Framing records here — header block, ``Content-Length`` bytes, CRLF CRLF — gives one rule for
both readers: every malformed record becomes a ``BadRecord`` with its reason, and reading
resumes at the next ``WARC/1.x`` line (or the next gzip member after a damaged one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from clipcrawl.io.decompress import Chunk, Gap

MAX_HEADER_BYTES = 64 * 1024
MAX_RECORD_BYTES = 64 * 1024 * 1024
_CRLF2 = b"\r\n\r\n"
_RECORD_START = b"WARC/1."

# Fixed names for what went wrong, so counts can be metrics; the reason says the details.
BAD_RECORD_KINDS = (
    "truncated", "lf_headers", "content_length", "garbage", "bad_header", "corrupt_gzip", "too_large",
    "bad_http", "invalid_json", "not_utf8",
)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One well-formed record: its WARC headers (names lower-cased) and its block."""

    offset: int
    headers: dict[str, str]
    block: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower()) or ""


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that could not be read, with why; ``record_id`` when its header was readable."""

    offset: int
    kind: str  # one of BAD_RECORD_KINDS: a fixed name for counters
    reason: str
    record_id: str = ""


class _Window:
    """A sliding view over the decompressed chunks; stops at a ``Gap`` until told to pass it."""

    def __init__(self, chunks: Iterable[Chunk], base: int = 0) -> None:
        self._chunks = iter(chunks)
        self.buf = b""
        self.pos = 0
        self.base = base  # stream offset of buf[0]
        self.gap: Gap | None = None
        self.done = False

    def available(self) -> int:
        return len(self.buf) - self.pos

    def ensure(self, n: int) -> bool:
        """Make ``n`` bytes from ``pos`` available; False at a gap or the end of the file."""
        while self.available() < n and self.gap is None and not self.done:
            item = next(self._chunks, None)
            if item is None:
                self.done = True
            elif isinstance(item, Gap):
                self.gap = item
            else:
                self.base += self.pos
                self.buf = self.buf[self.pos :] + item
                self.pos = 0
        return self.available() >= n

    def find(self, needle: bytes, start: int, limit: int) -> int:
        """Index (from ``pos``) of ``needle`` at or after ``start``, searching at most ``limit`` bytes."""
        while True:
            found = self.buf.find(needle, self.pos + start, self.pos + limit)
            if found >= 0:
                return found - self.pos
            if self.available() >= limit or not self.ensure(self.available() + 1):
                return -1

    def skip(self, n: int) -> None:
        """Drop ``n`` bytes (they need not be buffered: big records stream past)."""
        while n > self.available() and self.ensure(self.available() + 1):
            n -= self.available()
            self.base += len(self.buf)
            self.buf, self.pos = b"", 0
        self.pos += min(n, self.available())

    def pass_gap(self) -> Gap:
        """Drop what was read before the gap and continue after it."""
        gap, self.gap = self.gap, None
        self.base += len(self.buf)
        self.buf, self.pos = b"", 0
        assert gap is not None
        return gap

    @property
    def offset(self) -> int:
        return self.base + self.pos


def parse_headers(block: bytes, line_end: str = "\r\n") -> dict[str, str]:
    """WARC header lines (after the version line) as a dict with lower-cased names."""
    headers: dict[str, str] = {}
    name = ""
    for line in block.decode("utf-8", "replace").split(line_end)[1:]:
        if line[:1] in (" ", "\t") and name:  # continuation line
            headers[name] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep:
            name = key.strip().lower()
            headers[name] = value.strip()
    return headers


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def iter_frames(chunks: Iterable[Chunk], base: int = 0) -> Iterator[Frame | BadRecord]:
    """Every record of a decompressed WARC stream, well-formed or not, in file order.

    ``base`` is the stream offset of the first chunk; offsets in frames count from there.
    """
    window = _Window(chunks, base)
    while True:
        _skip_blank_lines(window)
        if not window.ensure(1):
            if window.gap is None:
                return
            gap = window.pass_gap()
            yield BadRecord(gap.offset, gap.kind, gap.reason)
            continue
        yield from _read_one(window)


def _skip_blank_lines(window: _Window) -> None:
    while window.ensure(1) and window.buf[window.pos] in b"\r\n":
        window.pos += 1


def _read_one(window: _Window) -> Iterator[Frame | BadRecord]:
    start = window.offset
    if not (window.ensure(len(_RECORD_START)) and window.buf.startswith(_RECORD_START, window.pos)):
        yield from _fail(window, BadRecord(start, "garbage", "no WARC record starts here (garbage between records)"), 0)
        return
    crlf_end = window.find(_CRLF2, 0, MAX_HEADER_BYTES)
    lf_end = window.find(b"\n\n", 0, crlf_end if crlf_end >= 0 else MAX_HEADER_BYTES)
    if lf_end >= 0 or (crlf_end >= 0 and _has_bare_lf(window.buf[window.pos : window.pos + crlf_end])):
        yield from _skip_lf_record(window, start, lf_end)
        return
    if crlf_end < 0:
        if window.done:
            bad = BadRecord(start, "truncated", "truncated: the file ends inside a WARC header")
        else:
            bad = BadRecord(start, "bad_header", f"WARC header longer than {MAX_HEADER_BYTES} bytes")
        yield from _fail(window, bad)
        return
    headers = parse_headers(window.buf[window.pos : window.pos + crlf_end])
    record_id = headers.get("warc-record-id", "")
    length = _content_length(headers)
    if length is None:
        reason = f"missing or invalid Content-Length {headers.get('content-length')!r}"
        yield from _fail(window, BadRecord(start, "bad_header", reason, record_id))
        return
    block_start = crlf_end + len(_CRLF2)
    if length > MAX_RECORD_BYTES:
        yield BadRecord(start, "too_large", f"record of {length} bytes is over the {MAX_RECORD_BYTES}-byte limit", record_id)
        window.skip(block_start + length)
        return
    if not window.ensure(block_start + length):
        have = window.available() - block_start
        reason = f"truncated: Content-Length {length} but only {have} bytes follow"
        yield from _fail(window, BadRecord(start, "truncated", reason, record_id), resync_from=None)
        return
    window.ensure(block_start + length + len(_CRLF2))
    end = window.pos + block_start + length
    trailer = window.buf[end : end + len(_CRLF2)]
    at_end = window.available() < block_start + length + len(_CRLF2)
    if trailer != _CRLF2 and not (at_end and _CRLF2.startswith(trailer)):
        reason = f"Content-Length {length} does not match the record (no CRLF CRLF after it)"
        yield from _fail(window, BadRecord(start, "content_length", reason, record_id))
        return
    block = window.buf[window.pos + block_start : end]
    window.pos = end + len(trailer)
    yield Frame(start, headers, block)


def _has_bare_lf(header: bytes) -> bool:
    return header.count(b"\n") != header.count(b"\r\n")


def _skip_lf_record(window: _Window, start: int, lf_end: int) -> Iterator[BadRecord]:
    """A record whose header lines end in LF: reported, and skipped by its own Content-Length if sane."""
    header = window.buf[window.pos : window.pos + max(lf_end, 0)].replace(b"\r\n", b"\n")
    headers = parse_headers(header, "\n")
    bad = BadRecord(start, "lf_headers", "WARC header lines end in LF, not CRLF", headers.get("warc-record-id", ""))
    length = _content_length(headers)
    if lf_end >= 0 and length is not None and length <= MAX_RECORD_BYTES:
        end = lf_end + 2 + length
        if window.ensure(end):
            after = window.buf[window.pos + end : window.pos + end + 16].lstrip(b"\r\n")
            if after.startswith(_RECORD_START[: len(after)]):
                yield bad
                window.pos += end
                return
    yield from _fail(window, bad)


def _fail(window: _Window, bad: BadRecord, resync_from: int | None = 1) -> Iterator[BadRecord]:
    """Report ``bad`` and move on: past the gap that cut the record, or to the next record start.

    ``resync_from=None`` means the record ran to the end of what is readable: drop it all.
    """
    if window.gap is not None and (resync_from is None or window.available() < MAX_HEADER_BYTES):
        gap = window.pass_gap()
        reason = f"{bad.reason}; {gap.reason} (compressed offset {gap.offset})"
        yield BadRecord(bad.offset, gap.kind, reason, bad.record_id)
        return
    yield bad
    if resync_from is None:
        window.pos = len(window.buf)
    else:
        _resync(window, resync_from)


def _resync(window: _Window, start: int) -> None:
    """Move to the next line that starts a WARC record (a gap or the end stops the search)."""
    needle = b"\n" + _RECORD_START
    while True:
        found = window.buf.find(needle, window.pos + start)
        if found >= 0:
            window.pos = found + 1
            return
        window.pos = max(window.pos + start, len(window.buf) - len(needle))
        start = 0
        if not window.ensure(window.available() + 1):
            window.pos = len(window.buf)
            return
