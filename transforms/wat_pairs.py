"""Image/alt-text pairs from one WAT metadata record (pure functions).

The WAT generator (ia-web-commons) stores each ``<img src>`` as a link object
``{"path": "IMG@/src", "url": <src as written>, "alt": <alt as written>}`` under
``Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata.Links``. ``url`` is
unresolved and untrimmed; entities are raw in older crawls (``&amp;``) and decoded in newer
ones, so both are handled here.
"""

from __future__ import annotations

from typing import Any, Optional

import msgspec

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


# The path to the links, as msgspec types: decoding into them skips every other field while
# still checking the whole document's syntax, about twice as fast as a full parse into dicts
# (bench/extract.py). A document of another shape falls back to the general dict path.
class _Link(msgspec.Struct):
    path: Any = None
    url: Any = None
    alt: Any = None


class _Head(msgspec.Struct):
    Base: Any = None


class _HtmlMetadata(msgspec.Struct):
    Head: Optional[_Head] = None  # noqa: UP007 - msgspec reads these annotations at runtime
    Links: Optional[list[_Link]] = None  # noqa: UP007


class _ResponseMetadata(msgspec.Struct, rename={"html": "HTML-Metadata"}):
    html: Optional[_HtmlMetadata] = None  # noqa: UP007


class _PayloadMetadata(msgspec.Struct, rename={"response": "HTTP-Response-Metadata"}):
    response: Optional[_ResponseMetadata] = None  # noqa: UP007


class _Envelope(msgspec.Struct, rename={"payload": "Payload-Metadata"}):
    payload: Optional[_PayloadMetadata] = None  # noqa: UP007


class _WatDocument(msgspec.Struct):
    Envelope: Optional[_Envelope] = None  # noqa: UP007


_DOCUMENT = msgspec.json.Decoder(_WatDocument)


def wat_record_pairs(payload: bytes, page_url: str) -> tuple[list[Pair], ExtractStats]:
    """Pairs of one WAT record's JSON payload; BadRecordError when it is not valid JSON."""
    try:
        document = _DOCUMENT.decode(payload)
    except msgspec.ValidationError:  # valid JSON of an unexpected shape: the dict path decides
        return extract_pairs(parse_wat_json(payload), page_url)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise _bad_json(payload, error) from error
    envelope = document.Envelope
    payload_metadata = envelope.payload if envelope else None
    response = payload_metadata.response if payload_metadata else None
    metadata = response.html if response else None
    if metadata is None or not metadata.Links:
        return [], ExtractStats()
    base_href = metadata.Head.Base if metadata.Head and isinstance(metadata.Head.Base, str) else None
    images = [link for link in metadata.Links if link.path == IMAGE_LINK_PATH]
    return pairs_from_images(((link.url, link.alt) for link in images), page_url, base_href)


def _html_metadata(envelope: dict[str, Any]) -> dict[str, Any] | None:
    payload = envelope.get("Payload-Metadata") or {}
    response = payload.get("HTTP-Response-Metadata") or {}
    found = response.get("HTML-Metadata")
    return found if isinstance(found, dict) else None


def parse_wat_json(payload: bytes) -> dict[str, Any]:
    """The JSON object of a WAT metadata record; BadRecordError when it is not one."""
    try:
        document = msgspec.json.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise _bad_json(payload, error) from error
    if not isinstance(document, dict):
        raise BadRecordError("invalid_json", "WAT JSON is not an object")
    return document


def _bad_json(payload: bytes, error: Exception) -> BadRecordError:
    if not _is_utf8(payload):
        return BadRecordError("not_utf8", f"WAT JSON is not valid UTF-8: {error}")
    return BadRecordError("invalid_json", f"invalid WAT JSON: {error}")


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
    pairs, _ = wat_record_pairs(payload, page_url)
    return pairs
