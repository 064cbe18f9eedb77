"""Extraction on real Common Crawl WATs (tests/data, provenance in PROVENANCE.md) and edge cases."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import PAGE_2014, PAIRS_2014, wat_records as iter_wat_metadata
from clipcrawl.transforms import metrics
from clipcrawl.transforms.extract import SAMPLES, SHARD_ERRORS, ExtractPairs
from clipcrawl.transforms.pairs import BadRecordError, Pair, clean_caption, decode_entities, resolve_image_url
from clipcrawl.transforms.wat_pairs import extract_pairs, parse_wat_record
from tests.conftest import WAT_2014, WAT_2014_GZ, WAT_WHIRLWIND, beam_options

EXPECTED_2014 = [Pair(url, caption, PAGE_2014) for url, caption in PAIRS_2014]


def all_pairs(path) -> list[Pair]:
    return [pair for record in iter_wat_metadata(str(path)) for pair in parse_wat_record(record.payload, record.target_uri)]


@pytest.mark.parametrize("path", [WAT_2014, WAT_2014_GZ], ids=["plain", "gzip-per-record"])
def test_real_2014_wat_gives_exactly_its_four_pairs(path) -> None:
    assert all_pairs(path) == EXPECTED_2014


def test_real_2014_wat_reads_all_eight_metadata_records() -> None:
    records = list(iter_wat_metadata(str(WAT_2014_GZ)))
    assert len(records) == 8
    assert records[-1].target_uri.startswith("http")


def test_whirlwind_wat_without_html_metadata_gives_no_pairs() -> None:
    records = list(iter_wat_metadata(str(WAT_WHIRLWIND)))
    assert len(records) == 1  # the metadata record of a request: no HTML-Metadata at all
    assert all_pairs(WAT_WHIRLWIND) == []


def _document(links, base=None) -> dict:
    head = {"Base": base} if base is not None else {}
    html_metadata = {"Head": head, "Links": links}
    return {"Envelope": {"Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": html_metadata}}}}


@pytest.mark.parametrize(
    ("src", "page", "base", "expected"),
    [
        ("img.jpg", "http://a.com/dir/page.html", None, "http://a.com/dir/img.jpg"),
        ("./img.jpg", "http://a.com/dir/page.html?x=1", None, "http://a.com/dir/img.jpg"),
        ("../img.jpg", "http://a.com/dir/sub/page", None, "http://a.com/dir/img.jpg"),
        ("/img.jpg", "https://a.com/dir/page", None, "https://a.com/img.jpg"),
        ("//cdn.a.com/img.jpg", "https://a.com/", None, "https://cdn.a.com/img.jpg"),
        # LAION's workers used the page's directory; a query-only page URL shows the difference.
        ("img.jpg", "http://a.com/photos/?gallery=x", None, "http://a.com/photos/img.jpg"),
        # <base href> wins over the page URL, and may itself be relative to the page.
        ("img.jpg", "http://a.com/dir/page", "http://cdn.b.org/static/", "http://cdn.b.org/static/img.jpg"),
        ("img.jpg", "http://a.com/dir/page", "/assets/", "http://a.com/assets/img.jpg"),
        # src as written: untrimmed, raw entities from the 2014-era generator, fragments.
        ("  \n/x.png?a=1&amp;b=2 ", "http://a.com/", None, "http://a.com/x.png?a=1&b=2"),
        ("/x.png?a=1&copy=2", "http://a.com/", None, "http://a.com/x.png?a=1&copy=2"),
        ("/x.png#frag", "http://a.com/", None, "http://a.com/x.png"),
        ("data:image/png;base64,AAAA", "http://a.com/", None, None),
        ("javascript:void(0)", "http://a.com/", None, None),
        ("ftp://a.com/x.png", "http://a.com/", None, None),
        ("   ", "http://a.com/", None, None),
        ("http://[::1", "http://a.com/", None, None),
    ],
)
def test_resolve_image_url(src, page, base, expected) -> None:
    assert resolve_image_url(src, page, base) == expected


@pytest.mark.parametrize(
    ("alt", "expected"),
    [
        ("  A   red\n\tcircle ", "A red circle"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("caf&eacute; &#8212; &#x263A;", "café — ☺"),
        ("AT&T logo", "AT&T logo"),
        ("\u00a0non-breaking\u00a0", "non-breaking"),
        ("   ", ""),
    ],
)
def test_clean_caption(alt, expected) -> None:
    assert clean_caption(alt) == expected


def test_decode_entities_leaves_bare_ampersands_alone() -> None:
    assert decode_entities("a=1&copy=2&amp;c") == "a=1&copy=2&c"


def test_links_without_alt_blank_alt_or_other_paths_are_not_candidates() -> None:
    document = _document(
        [
            {"path": "IMG@/src", "url": "/a.jpg"},  # no alt attribute
            {"path": "IMG@/src", "url": "/b.jpg", "alt": ""},  # alt=""
            {"path": "IMG@/src", "url": "/c.jpg", "alt": " \t"},  # blank
            {"path": "A@/href", "url": "/d.jpg", "text": "a link"},  # not an image
            {"path": "IMG@/src", "url": "data:image/gif;base64,R0lG", "alt": "inline"},
            {"path": "IMG@/src", "url": "/e.jpg", "alt": "kept"},
        ]
    )
    pairs, stats = extract_pairs(document, "http://a.com/")
    assert pairs == [Pair("http://a.com/e.jpg", "kept", "http://a.com/")]
    assert stats.non_http_links == 1


def test_records_without_html_metadata_or_odd_shapes_give_nothing() -> None:
    assert extract_pairs({}, "http://a.com/")[0] == []
    assert extract_pairs({"Envelope": "x"}, "http://a.com/")[0] == []
    assert extract_pairs(_document(None), "http://a.com/")[0] == []
    assert extract_pairs(_document(["x", {"path": "IMG@/src", "url": 3, "alt": "y"}]), "http://a.com/")[0] == []


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"\xff\xfe\x00garbage"])
def test_bad_json_is_a_bad_record_error(payload) -> None:
    with pytest.raises(BadRecordError):
        parse_wat_record(payload, "http://a.com/")


def test_extract_pairs_transform_numbers_samples_and_reports_unreadable_shards(tmp_path) -> None:
    missing = str(tmp_path / "missing.wat.gz")
    pipeline = TestPipeline(options=beam_options())
    outputs = pipeline | beam.Create([(7, str(WAT_2014_GZ)), (8, str(WAT_WHIRLWIND)), (9, missing)]) | ExtractPairs()
    keyed = outputs[SAMPLES] | "Facts" >> beam.Map(lambda s: (s.key, s.url, s.caption, s.source, s.status))
    assert_that(
        keyed,
        equal_to(
            [
                (f"0000070{i:06d}", pair.url, pair.caption, str(WAT_2014_GZ), "pending")
                for i, pair in enumerate(EXPECTED_2014)
            ]
        ),
        label="SamplesOfShard7",
    )
    errors = outputs[SHARD_ERRORS] | "ErrorShard" >> beam.Map(lambda error: (error[0], "cannot read" in error[1]))
    assert_that(errors, equal_to([(9, True)]), label="UnreadableShard9")
    result = pipeline.run()
    result.wait_until_finish()
    read_total = result.metrics().query(
        MetricsFilter().with_namespace(metrics.namespace(metrics.READ)).with_name(metrics.TOTAL)
    )["counters"]
    assert sum(counter.committed for counter in read_total) == 9  # 8 + 1 metadata records


def test_bad_record_does_not_stop_the_records_after_it(tmp_path) -> None:
    from clipcrawl.io.wat_writer import ImageLink, Page, write_wat

    path = tmp_path / "mixed.wat.gz"
    with open(path, "wb") as sink:
        write_wat(sink, [Page("http://a.com/1", [ImageLink("/1.jpg", "first picture")])])
        sink.write(_metadata_record(b'{"Links": [{"path": "IMG@/src", truncated json'))
        write_wat(sink, [Page("http://a.com/2", [ImageLink("/2.jpg", "second picture")])])
    pipeline = TestPipeline(options=beam_options())
    outputs = pipeline | beam.Create([(0, str(path))]) | ExtractPairs()
    assert_that(outputs[SAMPLES] | beam.Map(lambda s: s.url), equal_to(["http://a.com/1.jpg", "http://a.com/2.jpg"]))
    result = pipeline.run()
    result.wait_until_finish()
    bad = result.metrics().query(MetricsFilter().with_name(metrics.dropped_name(metrics.BAD_RECORDS)))["counters"]
    assert sum(counter.committed for counter in bad) == 1


def _metadata_record(payload: bytes) -> bytes:
    import gzip

    head = (
        "WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: http://a.com/bad\r\n"
        "WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000000>\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return gzip.compress(head + payload + b"\r\n\r\n")


def test_expected_pairs_match_the_raw_json() -> None:
    """Guard the hand-written expectation: the raw record really has these four IMG links."""
    text = WAT_2014.read_text(encoding="utf-8")
    raw_links = [link for line in text.splitlines() if line.startswith("{") for link in _links(json.loads(line))]
    assert [(link["url"], link["alt"]) for link in raw_links if link.get("path") == "IMG@/src"] == [
        ("./galleries/Australia/lq/img-496.jpg", "496"),
        ("./galleries/Australia/thumbs/img-495.jpg", "Previous"),
        ("./galleries/Australia/thumbs/img-497.jpg", "Next"),
        ("http://creativecommons.org/images/public/somerights20.png", "Creative Commons License"),
    ]


def _links(document: dict) -> list[dict]:
    payload = document.get("Envelope", {}).get("Payload-Metadata", {})
    return payload.get("HTTP-Response-Metadata", {}).get("HTML-Metadata", {}).get("Links", [])


def test_the_plain_url_shortcuts_change_no_result() -> None:
    """resolve_image_url joins plain srcs without urljoin; the full urljoin/urlsplit path must
    agree on every src the shortcut takes (fuzzed over URL punctuation and page shapes)."""
    import random
    from urllib.parse import urljoin, urlsplit

    from clipcrawl.transforms import pairs

    def full_path(src: str, page: str) -> str | None:  # the general path: trim, join, split, cut fragment
        parts = urlsplit(urljoin(page, pairs.decode_entities(src).strip(pairs._URL_STRIP)))
        return parts._replace(fragment="").geturl() if parts.hostname else None

    rng = random.Random(7)
    alphabet = "ab.-/:?=%1@!$'()*+,;&#_~[]\\ \t"
    prefixes = ["http://", "https://", "/", "//", "", "./", "../", "?", "a/", "HTTP://", " ", "#", " http://", "&amp;",
                "//a.b/"]
    srcs = ["http://a.com/x.jpg", "https://A.COM/x.jpg?w=1", "http://a.com/a/../b.jpg", "/img/x.jpg",
            "img/x.jpg", "x.jpg?v=2", "/a/./b.jpg", "../x.jpg", "mailto:x", "data:x"]
    srcs += [rng.choice(prefixes) + "".join(rng.choices(alphabet, k=rng.randint(0, 14))) for _ in range(40000)]
    pages = ["http://p.org/dir/page.html", "https://p.org/", "http://p.org", "http://p.org/a/../b/c.html",
             "http://p.org/dir/page.html?q=1", "http://u:pw@P.org:81/d/", "http://p.org/.well/x", "https://p.org//x/y",
             "http://p.org/d/#frag", "https://p.org/i.php?a=1&b=%20#x", "http://p.org/a&b/c", "HTTP://p.org/x"]
    taken = 0
    for src in srcs:
        for page in pages:
            if pairs._plain_join(src, page) is not None:
                taken += 1
                assert resolve_image_url(src, page) == full_path(src, page), (src, page)
    assert taken > 5000
