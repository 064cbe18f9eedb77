"""Image/alt-text pairs from WAT metadata records: pure functions plus the ExtractPairs step.

The WAT generator (ia-web-commons) stores each ``<img src>`` as a link object
``{"path": "IMG@/src", "url": <src as written>, "alt": <alt as written>}`` under
``Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata.Links``. ``url`` is
unresolved and untrimmed; entities are raw in older crawls (``&amp;``) and decoded in newer
ones, so both are handled here.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import apache_beam as beam

from clipcrawl.io.wat import iter_wat_metadata
from clipcrawl.transforms import metrics
from clipcrawl.transforms.sample import Sample, sample_key

_LOG = logging.getLogger(__name__)

SAMPLES = "samples"
SHARD_ERRORS = "shard_errors"

IMAGE_LINK_PATH = "IMG@/src"
ALLOWED_SCHEMES = frozenset({"http", "https"})

# Entities with a terminating ';' only: "&copy=2" inside an already-decoded URL must survive.
_ENTITY = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_WHITESPACE = re.compile(r"\s+")
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
    """A metadata record whose payload is not the WAT JSON it claims to be."""


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


def _html_metadata(envelope: dict[str, Any]) -> dict[str, Any] | None:
    payload = envelope.get("Payload-Metadata") or {}
    response = payload.get("HTTP-Response-Metadata") or {}
    found = response.get("HTML-Metadata")
    return found if isinstance(found, dict) else None


def parse_wat_json(payload: bytes) -> dict[str, Any]:
    """The JSON object of a WAT metadata record; BadRecordError when it is not one."""
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadRecordError(f"invalid WAT JSON: {error}") from error
    if not isinstance(document, dict):
        raise BadRecordError("WAT JSON is not an object")
    return document


def extract_pairs(document: dict[str, Any], page_url: str) -> tuple[list[Pair], ExtractStats]:
    """Every image link with non-blank alt text in one parsed WAT record, in page order."""
    envelope = document.get("Envelope")
    metadata = _html_metadata(envelope) if isinstance(envelope, dict) else None
    if metadata is None:
        return [], ExtractStats()
    head = metadata.get("Head") if isinstance(metadata.get("Head"), dict) else {}
    base_href = head.get("Base") if isinstance(head.get("Base"), str) else None
    pairs: list[Pair] = []
    non_http = 0
    for link in metadata.get("Links") or ():
        if not isinstance(link, dict) or link.get("path") != IMAGE_LINK_PATH:
            continue
        alt, src = link.get("alt"), link.get("url")
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


def parse_wat_record(payload: bytes, page_url: str) -> list[Pair]:
    """Pairs of one WAT metadata record's payload (raises BadRecordError on bad JSON)."""
    pairs, _ = extract_pairs(parse_wat_json(payload), page_url)
    return pairs


def number_pairs(shard_no: int, source: str, pairs: Iterable[Pair]) -> Iterator[Sample]:
    """Pending samples keyed ``{shard:06d}{ordinal:07d}`` in extraction order."""
    for ordinal, pair in enumerate(pairs):
        yield Sample(
            key=sample_key(shard_no, ordinal),
            shard_no=shard_no,
            url=pair.url,
            caption=pair.caption,
            page_url=pair.page_url,
            source=source,
        )


class _ExtractShardFn(beam.DoFn):
    """Reads one shard's WAT records and numbers its pairs (one shard per call: keys stay dense).

    A shard that cannot be read (missing file, corrupt gzip) is not an exception for the
    job: its ``(shard_no, message)`` goes to the ``errors`` output and the writer records
    the shard as failed, while the other shards finish.
    """

    def __init__(self) -> None:
        self._read = metrics.StageCounters(metrics.READ)
        self._extract = metrics.StageCounters(metrics.EXTRACT)

    def process(self, shard: tuple[int, str]) -> Iterator[Any]:
        shard_no, uri = shard
        try:
            yield from number_pairs(shard_no, uri, self._pairs_of(uri))
        except Exception as error:  # noqa: BLE001 - any read failure fails this shard only
            message = f"cannot read {uri}: {type(error).__name__}: {error}"
            _LOG.error("shard %06d: %s", shard_no, message)
            yield beam.pvalue.TaggedOutput(SHARD_ERRORS, (shard_no, message))

    def _pairs_of(self, uri: str) -> Iterator[Pair]:
        for record in iter_wat_metadata(uri):
            self._read.total.inc()
            try:
                pairs, stats = extract_pairs(parse_wat_json(record.payload), record.target_uri)
            except BadRecordError as error:
                self._read.drop(metrics.BAD_RECORDS)
                _LOG.warning("%s: skipped record %s: %s", uri, record.record_id, error)
                continue
            self._read.forwarded.inc()
            self._extract.counter(metrics.NON_HTTP_LINKS).inc(stats.non_http_links)
            self._extract.forwarded.inc(len(pairs))
            yield from pairs


class ExtractPairs(beam.PTransform):
    """``(shard_no, uri)`` shards -> pending ``Sample`` candidates, one per image link with alt.

    Returns a ``DoOutputsTuple``: the main output is the samples, ``SHARD_ERRORS`` holds
    ``(shard_no, message)`` for shards that could not be read.
    """

    def expand(self, shards: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            shards
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadAndExtract" >> beam.ParDo(_ExtractShardFn()).with_outputs(SHARD_ERRORS, main=SAMPLES)
        )
