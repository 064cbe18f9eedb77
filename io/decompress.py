"""Decompressed bytes of a WARC/WAT file as chunks, with a marked gap wherever the file is damaged.

Common Crawl writes one gzip member per record, so damage is local: a corrupt member spoils
one record and the next member starts clean. Python's ``gzip`` module and fastwarc's reader
both raise at the first bad byte and cannot go on; ``iter_members`` reports the damage as a
``Gap`` and resumes at the next member header. The fast path (fastwarc's gzip reader) is used
until it raises; then the same file is re-read from where it stopped with ``iter_members``,
so a damaged file gives the same records whichever reader is installed.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, ContextManager

GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 16 * 1024  # small: unused_data is copied at each member boundary
_FAST_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Gap:
    """Damaged or missing data at ``offset`` (compressed bytes) that no record can be read from."""

    offset: int
    kind: str  # "truncated" or "corrupt_gzip"
    reason: str


Chunk = bytes | Gap


def is_gzip(head: bytes) -> bool:
    return head.startswith(GZIP_MAGIC[:2])


def iter_plain(stream: BinaryIO) -> Iterator[Chunk]:
    """An uncompressed file, chunk by chunk."""
    while chunk := stream.read(_FAST_CHUNK):
        yield chunk


def iter_members(stream: BinaryIO, skip: int = 0) -> Iterator[Chunk]:
    """Decompressed bytes of a (multi-member) gzip file; a ``Gap`` where a member is corrupt or cut.

    ``skip`` decompressed bytes are dropped first (used to resume after the fast reader).
    """
    offset = 0  # compressed offset of the start of ``pending``
    pending = b""
    eof = False
    to_skip = skip
    while True:
        if not pending and not eof:
            pending = stream.read(_CHUNK)
            eof = not pending
        if not pending:
            return
        member_start = offset
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            while True:
                out = decompressor.decompress(pending)
                if to_skip and out:
                    dropped = min(to_skip, len(out))
                    out, to_skip = out[dropped:], to_skip - dropped
                if out:
                    yield out
                if decompressor.eof:
                    used = len(pending) - len(decompressor.unused_data)
                    offset += used
                    pending = decompressor.unused_data
                    break
                offset += len(pending)
                pending = b"" if eof else stream.read(_CHUNK)
                if not pending:
                    eof = True
                    yield Gap(member_start, "truncated", "file ends inside a gzip member (truncated download?)")
                    return
        except zlib.error as error:
            yield Gap(member_start, "corrupt_gzip", f"corrupt gzip member: {error}")
            pending, offset, eof = _next_member(stream, member_start + 1, offset, pending, eof)


def _next_member(stream: BinaryIO, search_from: int, offset: int, pending: bytes, eof: bool) -> tuple[bytes, int, bool]:
    """Advance to the next gzip header at or after ``search_from``; returns (pending, offset, eof)."""
    # ``pending`` starts at ``offset``; the bytes between search_from and offset were consumed and
    # belong to the damaged member unless a header hides there, which re-reading cannot recover.
    start = max(0, search_from - offset)
    while True:
        found = pending.find(GZIP_MAGIC, start)
        if found >= 0:
            return pending[found:], offset + found, eof
        if eof:
            return b"", offset + len(pending), True
        keep = pending[-(len(GZIP_MAGIC) - 1):]
        more = stream.read(_CHUNK)
        eof = not more
        offset += len(pending) - len(keep)
        pending, start = keep + more, 0


def iter_fast(stream: BinaryIO, reopen: Callable[[], ContextManager[BinaryIO]]) -> Iterator[Chunk]:
    """fastwarc's gzip reader (about 2x Python's zlib here) until it raises, then ``iter_members``.

    On an error fastwarc loses the rest of the read call and cannot resume, so the file is
    reopened and the careful reader takes over at the last byte fastwarc delivered. A final
    member cut short ends quietly in fastwarc; the framer then sees the record it cut.
    """
    from fastwarc import GzipReader

    produced = 0
    reader = GzipReader(stream, fsspec_args=False)
    try:
        while True:
            chunk = reader.read(_FAST_CHUNK)
            if not chunk:
                break
            produced += len(chunk)
            yield chunk
        return
    except OSError:
        pass  # resumed below, from ``produced`` decompressed bytes
    with reopen() as again:
        yield from iter_members(again, skip=produced)
