"""Decompressed bytes of a WARC/WAT file as chunks, with a marked gap wherever the file is damaged.

Common Crawl writes one gzip member per record, so damage is local: a corrupt member spoils
one record and the next member starts clean. Python's ``gzip`` module and fastwarc's reader
both raise at the first bad byte and cannot go on; ``iter_members`` reports the damage as a
``Gap`` and resumes at the next member header. This is the careful path of
``clipcrawl.io.archive``; the fast path hands over to it at the first sign of damage.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 16 * 1024  # small: unused_data is copied at each member boundary
_PLAIN_CHUNK = 1024 * 1024


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
    while chunk := stream.read(_PLAIN_CHUNK):
        yield chunk


def iter_members(stream: BinaryIO, offset: int = 0) -> Iterator[Chunk]:
    """Decompressed bytes of a (multi-member) gzip file; a ``Gap`` where a member is corrupt or cut.

    ``offset`` is where in the file ``stream`` is positioned (a member start), for messages.
    """
    pending = b""  # compressed bytes from ``offset`` on
    eof = False
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
