"""What an image link becomes, whatever it was read from: the pair, and the shared URL/caption rules.

The WAT path and the HTML path must give the same pair for the same ``<img>``; both use the
functions here, so the rules (entity decoding, whitespace, ``<base href>``, http(s) only)
live in one place.
"""

from __future__ import annotations

import dataclasses
import html
import re
from urllib.parse import urljoin, urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Entities with a terminating ';' only: "&copy=2" inside an already-decoded URL must survive.
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_WHITESPACE = re.compile(r"\s+")
# An absolute http(s) URL that urljoin and urlsplit/geturl give back unchanged: a host of
# plain characters, then path and query characters with no entity, fragment, params, empty
# query or backslash. Most image srcs are like this; they skip the two parses (bench/extract.py).
_PLAIN_ABSOLUTE = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%!$'()*+,=:@/\-]*)?(?:\?[A-Za-z0-9._~%!$'()*+,=:@/?\-]+)?")
# HTML strips ASCII whitespace around URL attribute values; C0 controls are dropped too.
_URL_STRIP = "\t\n\f\r \x00\x0b"


@dataclasses.dataclass(frozen=True)
class Pair:
    """One image link with non-blank alt text, URL already resolved to absolute."""

    url: str
    caption: str
    page_url: str


@dataclasses.dataclass(frozen=True)
class ExtractStats:
    """What one record contributed beyond its pairs (for metrics)."""

    non_http_links: int = 0


class BadRecordError(ValueError):
    """A record whose payload is not what it claims to be; ``kind`` is a fixed name for counters."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode_entities(text: str) -> str:
    """Decode HTML character references that end in ';' (safe on already-decoded text)."""
    if "&" not in text:
        return text
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)


def clean_caption(alt: str) -> str:
    """Alt text as a caption: entities decoded, whitespace runs collapsed, ends trimmed."""
    return _WHITESPACE.sub(" ", decode_entities(alt)).strip()


def resolve_image_url(src: str, page_url: str, base_href: str | None = None) -> str | None:
    """Absolute http(s) URL for an ``<img src>``, or None when it is not http(s).

    Resolution follows the HTML rule: against ``<base href>`` (itself resolved against the
    page) when present, else the page URL. Fragments are dropped: they never reach a server.
    """
    if _PLAIN_ABSOLUTE.fullmatch(src) and not base_href:
        return src
    src = decode_entities(src).strip(_URL_STRIP)
    if not src:
        return None
    base = page_url
    if base_href:
        base = urljoin(page_url, decode_entities(base_href).strip(_URL_STRIP))
    try:
        absolute = urljoin(base, src)
        parts = urlsplit(absolute)
    except ValueError:  # e.g. an invalid IPv6 literal in the netloc
        return None
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not parts.hostname:
        return None
    return parts._replace(fragment="").geturl()
