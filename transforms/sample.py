"""The one record type that flows from extraction to the shard writer."""

from __future__ import annotations

import dataclasses
from typing import Any

from clipcrawl.transforms.status import Status

# Digits of the per-shard ordinal in a sample key: key = f"{shard_no:06d}{ordinal:07d}".
SHARD_DIGITS = 6
ORDINAL_DIGITS = 7


def sample_key(shard_no: int, ordinal: int) -> str:
    """The zero-padded, sortable key shared by a sample's tar members and parquet row."""
    if not 0 <= shard_no < 10**SHARD_DIGITS:
        raise ValueError(f"shard_no {shard_no} does not fit in {SHARD_DIGITS} digits")
    if not 0 <= ordinal < 10**ORDINAL_DIGITS:
        raise ValueError(f"shard {shard_no} has more than {10**ORDINAL_DIGITS} candidate pairs")
    return f"{shard_no:0{SHARD_DIGITS}d}{ordinal:0{ORDINAL_DIGITS}d}"


@dataclasses.dataclass
class Sample:
    """A candidate image-text pair and everything learned about it so far.

    ``image`` holds the stored (resized, re-encoded) bytes; it goes into the tar, never into
    the parquet. All other fields are parquet columns (see ``clipcrawl.io.parquet``).
    """

    key: str
    shard_no: int
    url: str
    caption: str
    page_url: str | None  # None for URL-list rows without one
    source: str
    source_key: str | None = None  # the sample's key in the tar it was re-scored from
    language: str | None = None  # caption language (ISO 639 code), see transforms/language.py
    language_score: float | None = None
    status: str = Status.PENDING.value
    error_message: str | None = None
    image: bytes | None = dataclasses.field(default=None, repr=False)
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    sha256: str | None = None
    similarity: float | None = None
    http_status: int | None = None
    final_url: str | None = None
    fetch_time: float | None = None  # unix seconds when the response arrived
    fetch_seconds: float | None = None  # request start to body read
    downloaded_bytes: int | None = None
    # Filled by the scoring stage when asked: normalized CLIP features as float16 bytes (written
    # to the shard's .npy files, never to parquet or json), prompt-tag scores (parquet columns),
    # and a small JPEG of some rejected images (for the report; the full image is dropped).
    image_embedding: bytes | None = dataclasses.field(default=None, repr=False)
    text_embedding: bytes | None = dataclasses.field(default=None, repr=False)
    tags: dict[str, float] | None = None
    preview: bytes | None = dataclasses.field(default=None, repr=False)

    @property
    def pending(self) -> bool:
        return self.status == Status.PENDING

    def reject(self, status: Status, error_message: str) -> "Sample":
        """A copy that ends here with ``status``; the image bytes are dropped."""
        return dataclasses.replace(self, status=status.value, error_message=error_message, image=None)

    def metadata(self) -> dict[str, Any]:
        """Every field except the binary ones: the parquet row and the tar's ``.json``."""
        row = dataclasses.asdict(self)
        for name in BINARY_FIELDS:
            del row[name]
        return row


# Fields that hold bytes: never in the tar's .json (``Sample.metadata``).
BINARY_FIELDS = ("image", "image_embedding", "text_embedding", "preview")
