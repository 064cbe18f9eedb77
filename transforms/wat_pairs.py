"""Image/alt-text pairs from one WAT metadata record (pure functions).

The WAT generator (ia-web-commons) stores each ``<img src>`` as a link object
``{"path": "IMG@/src", "url": <src as written>, "alt": <alt as written>}`` under
``Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata.Links``. ``url`` is
unresolved and untrimmed; entities are raw in older crawls (``&amp;``) and decoded in newer
ones, so both are handled here.
"""

from __future__ import annotations

import json
from typing import Any

try:  # orjson parses WAT JSON about 2.5x faster than json (bench/extract.py)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _loads = json.loads

from clipcrawl.transforms.pairs import BadRecordError, ExtractStats, Pair, pairs_from_images

IMAGE_LINK_PATH = "IMG@/src"
# In the raw bytes, escaped ("IMG@\/src") or not: a record without it holds no image link.
_IMAGE_MARKER = b"IMG@"


def may_hold_image_links(payload: bytes) -> bool:
    """False when the record cannot hold an ``IMG@/src`` link, so it need not be parsed.

    Most WAT records (requests, metadata, pages without images) fail this byte search, which
    costs far less than parsing their JSON (bench/extract.py). The price: malformed JSON in
    such a record is not noticed; it could not have given a pair.
    """
    return _IMAGE_MARKER in payload


def _html_metadata(envelope: dict[str, Any]) -> dict[str, Any] | None:
    payload = envelope.get("Payload-Metadata") or {}
    response = payload.get("HTTP-Response-Metadata") or {}
    found = response.get("HTML-Metadata")
    return found if isinstance(found, dict) else None


def parse_wat_json(payload: bytes) -> dict[str, Any]:
    """The JSON object of a WAT metadata record; BadRecordError when it is not one."""
    try:
        document = _loads(payload)
    except (UnicodeDecodeError, ValueError) as error:
        if not _is_utf8(payload):
            raise BadRecordError("not_utf8", f"WAT JSON is not valid UTF-8: {error}") from error
        raise BadRecordError("invalid_json", f"invalid WAT JSON: {error}") from error
    if not isinstance(document, dict):
        raise BadRecordError("invalid_json", "WAT JSON is not an object")
    return document


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def extract_pairs(document: dict[str, Any], page_url: str) -> tuple[list[Pair], ExtractStats]:
    """Every image link with non-blank alt text in one parsed WAT record, in page order."""
    envelope = document.get("Envelope")
    metadata = _html_metadata(envelope) if isinstance(envelope, dict) else None
    if metadata is None:
        return [], ExtractStats()
    head = metadata.get("Head") if isinstance(metadata.get("Head"), dict) else {}
    base_href = head.get("Base") if isinstance(head.get("Base"), str) else None
    links = metadata.get("Links")
    if not isinstance(links, list):
        return [], ExtractStats()
    # Pages carry far more A@/href than IMG@/src links: pick the images out in one comprehension.
    images = [link for link in links if type(link) is dict and link.get("path") == IMAGE_LINK_PATH]
    return pairs_from_images(((link.get("url"), link.get("alt")) for link in images), page_url, base_href)


def parse_wat_record(payload: bytes, page_url: str) -> list[Pair]:
    """Pairs of one WAT metadata record's payload (raises BadRecordError on bad JSON)."""
    pairs, _ = extract_pairs(parse_wat_json(payload), page_url)
    return pairs
