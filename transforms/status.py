"""The closed set of per-candidate statuses written to every parquet row.

A failed or rejected candidate is data, not an exception: each candidate ends with exactly
one of the final statuses below, and ``error_message`` says why when it is not ``success``.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Final statuses, plus ``PENDING`` for rows still moving through the pipeline."""

    PENDING = "pending"  # internal only: never written
    SUCCESS = "success"  # downloaded, scored at or above the threshold, in a tar
    FILTERED_TEXT = "filtered_text"  # caption failed the text rules (length bounds)
    FILTERED_URL = "filtered_url"  # URL failed the URL rules (length, extension)
    DUPLICATE = "duplicate"  # same (url, caption) as an earlier candidate of the shard
    BLOCKED_ADDRESS = "blocked_address"  # host resolves to a non-public address (SSRF guard)
    DISALLOWED_ROBOTS = "disallowed_robots"  # robots.txt disallows the URL for our token, or is unreachable (5xx)
    DISALLOWED_HEADER = "disallowed_header"  # X-Robots-Tag noai/noimageai/noml/noindex/none for us
    DISALLOWED_TDM = "disallowed_tdm"  # TDM-Rep reserves mining rights: tdm-reservation: 1 header or tdmrep.json
    RATE_LIMITED = "rate_limited"  # host said 429/503 for longer than we wait, or no host slot in time
    FAILED_TO_DOWNLOAD = "failed_to_download"  # network error, HTTP error, size cap
    FAILED_TO_DECODE = "failed_to_decode"  # bytes are not an image Pillow can read
    TOO_SMALL = "too_small"  # below the minimum image side
    TOO_LARGE = "too_large"  # above the pixel limit (decompression-bomb guard)
    BELOW_THRESHOLD = "below_threshold"  # CLIP similarity under the threshold


FINAL_STATUSES: frozenset[str] = frozenset(s.value for s in Status if s is not Status.PENDING)
