"""What an image link becomes, whatever it was read from: the pair, and the shared URL/caption rules.

The WAT path and the HTML path must give the same pair for the same ``<img>``; both use the
functions here, so the rules (entity decoding, whitespace, ``<base href>``, http(s) only)
live in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Entities with a terminating ';' only: "&copy=2" inside an already-decoded URL must survive.
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_WHITESPACE = re.compile(r"\s+")
# An absolute http(s) URL that urljoin and urlsplit/geturl give back unchanged: a host of
# plain characters, then path and query characters with no entity, fragment, params, empty
# query or backslash. Most image srcs are like this; they skip the two parses (bench/extract.py).
_PLAIN_ABSOLUTE = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%!$&'()*+,=:@/\-]*)?(?:\?[A-Za-z0-9._~%!$&'()*+,=:@/?\-]+)?")
# The same, for a page URL: only its scheme, host and path matter (the query is replaced).
_PLAIN_PAGE = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%!$&'()*+,=:@/\-]*)?(?:\?[^#]*)?(?:#.*)?")
# Rooted ("/a/b.jpg?x=1") and plain relative ("img/b.jpg") srcs of the same plain characters,
# with no dot segment: joined onto the page's origin or directory without urljoin.
_PLAIN_ROOTED = re.compile(r"/[A-Za-z0-9._~%!$&'()*+,=:@/\-]*(?:\?[A-Za-z0-9._~%!$&'()*+,=:@/?\-]+)?")
_PLAIN_RELATIVE = re.compile(r"[A-Za-z0-9_~%!$&'()*+,=@\-][A-Za-z0-9._~%!$&'()*+,=@/\-]*(?:\?[A-Za-z0-9._~%!$&'()*+,=:@/?\-]+)?")
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
    # Most alts need none of it: no entity, no whitespace but single inner spaces.
    if "&" not in alt and alt.isprintable() and "  " not in alt and alt[:1] != " " and alt[-1:] != " ":
        return alt
    return _WHITESPACE.sub(" ", decode_entities(alt)).strip()


def resolve_image_url(src: str, page_url: str, base_href: str | None = None) -> str | None:
    """Absolute http(s) URL for an ``<img src>``, or None when it is not http(s).

    Resolution follows the HTML rule: against ``<base href>`` (itself resolved against the
    page) when present, else the page URL. Fragments are dropped: they never reach a server.
    """
    if not base_href:
        shortcut = _plain_join(src, page_url)
        if shortcut is not None:
            return shortcut
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


def pairs_from_images(
    images: Iterable[tuple[object, object]], page_url: str, base_href: str | None
) -> tuple[list[Pair], ExtractStats]:
    """Pairs from ``(src, alt)`` as written in the page, whatever it was read from (WAT or HTML).

    One rule for both paths: src and alt must be strings, the cleaned alt must not be blank,
    and the src must resolve to an http(s) URL (else it is counted as a non-http link).
    """
    pairs: list[Pair] = []
    non_http = 0
    for src, alt in images:
        if not isinstance(alt, str) or not isinstance(src, str):
            continue
        caption = clean_caption(alt)
        if not caption:
            continue
        url = resolve_image_url(src, page_url, base_href)
        if url is None:
            non_http += 1
            continue
        pairs.append(Pair(url=url, caption=caption, page_url=page_url))
    return pairs, ExtractStats(non_http_links=non_http)


def _plain_join(src: str, page_url: str) -> str | None:
    """The join for srcs that need no parsing (most of them), else None for the full path.

    Equal to the full path by construction and by a fuzz test (tests/test_extract.py): the
    src is trimmed and its fragment cut (both happen on the full path too); what is left has
    no entity, whitespace, backslash, dot segment or empty segment, nor has the page path.
    """
    src, _, _ = src.strip(_URL_STRIP).partition("#")
    if not src or ("&" in src and ";" in src):  # a character reference needs its ';'
        return None
    if _PLAIN_ABSOLUTE.fullmatch(src):
        return src
    if src.startswith("//"):  # scheme-relative: the page's scheme
        prefixes = _page_prefixes(page_url)
        absolute = f"{prefixes[2]}:{src}" if prefixes else ""
        return absolute if _PLAIN_ABSOLUTE.fullmatch(absolute) else None
    if "/." in src or src.startswith(".") or "//" in src:  # urljoin removes dot and empty segments
        return None
    if src.startswith("/"):
        if not _PLAIN_ROOTED.fullmatch(src):
            return None
        prefixes = _page_prefixes(page_url)
        return prefixes[0] + src if prefixes else None
    if not _PLAIN_RELATIVE.fullmatch(src):
        return None
    prefixes = _page_prefixes(page_url)
    return prefixes[1] + src if prefixes else None


@functools.lru_cache(maxsize=64)
def _page_prefixes(page_url: str) -> tuple[str, str, str] | None:
    """(origin, directory, scheme) of a plain http(s) page URL, or None when it needs urljoin."""
    if not _PLAIN_PAGE.fullmatch(page_url):
        return None
    parts = urlsplit(page_url)
    if "/." in parts.path or "//" in parts.path or not parts.hostname:
        return None
    origin = f"{parts.scheme}://{parts.netloc}"
    directory = parts.path[: parts.path.rfind("/") + 1] or "/"
    return origin, origin + directory, parts.scheme
