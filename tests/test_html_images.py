"""The HTML path of extraction on real WARC responses (tests/data, see PROVENANCE.md) and edge cases.

Every expected pair below was written by hand from the raw HTML of the record (printed with
warcio and a grep for ``<img``), not by running the function under test.
"""

from __future__ import annotations

import codecs
import html
import json
import re

import pytest
from warcio.archiveiterator import ArchiveIterator

from clipcrawl.io.archive import target_uri as _target_uri
from tests.conftest import PAGE_2014, PAIRS_2014, wat_records as iter_wat_metadata
from clipcrawl.transforms import html_images
from clipcrawl.transforms.html_images import html_image_pairs, page_codec
from clipcrawl.transforms.pairs import ExtractStats, Pair
from clipcrawl.transforms.wat_pairs import parse_wat_record
from tests.conftest import DATA, WAT_2014_GZ

WARC_2014 = DATA / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.part1.warc.gz"
WARC_2020 = DATA / "CC-MAIN-20200808165417-20200808195417-00395.part1.warc.gz"
WARC_WHIRLWIND = DATA / "whirlwind.warc.gz"
WARC_DOLMA = DATA / "dolma-wget-sample-0000.warc.gz"


def responses(path) -> dict[str, tuple[bytes, str | None]]:
    """target URI -> (de-chunked payload, HTTP Content-Type) of every response record."""
    found = {}
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type == "response":
                uri = _target_uri(record.rec_headers.get_header("WARC-Target-URI"))
                found[uri] = (record.content_stream().read(), record.http_headers.get_header("Content-Type"))
    return found


def pairs_of(path) -> dict[str, list[Pair]]:
    return {uri: html_image_pairs(body, uri, content_type)[0] for uri, (body, content_type) in responses(path).items()}


# --- 2014: the same page as WARC and as its genuine WAT ---------------------------------------

EXPECTED_2014 = [Pair(url, caption, PAGE_2014) for url, caption in PAIRS_2014]


def test_2014_warc_page_gives_exactly_the_pairs_of_its_genuine_wat() -> None:
    body, content_type = responses(WARC_2014)[PAGE_2014]
    from_html, stats = html_image_pairs(body, PAGE_2014, content_type)
    # The WAT describes the request, the response and the metadata record of this URI.
    records = [record for record in iter_wat_metadata(str(WAT_2014_GZ)) if record.target_uri == PAGE_2014]
    (response,) = [record for record in records if _warc_type(record.payload) == "response"]
    assert len(records) == 3
    assert from_html == parse_wat_record(response.payload, PAGE_2014) == EXPECTED_2014
    assert stats == ExtractStats(non_http_links=0)


def _warc_type(payload: bytes) -> str:
    return json.loads(payload)["Envelope"]["WARC-Header-Metadata"]["WARC-Type"]


def test_2014_redirect_response_with_empty_body_gives_nothing() -> None:
    found = pairs_of(WARC_2014)
    assert set(found) == {PAGE_2014, next(uri for uri in found if uri.startswith("http://0.r.msn.com/"))}
    assert [pairs for uri, pairs in found.items() if uri != PAGE_2014] == [[]]


# --- whirlwind (CC-MAIN-2024-22): 13 <img>, 7 with alt ----------------------------------------

WIKI = "https://an.wikipedia.org/wiki/Escopete"
THUMB = "https://upload.wikimedia.org/wikipedia/commons/thumb"
EXPECTED_WHIRLWIND = [
    Pair("https://an.wikipedia.org/static/images/mobile/copyright/wikipedia-wordmark-an.svg", "Biquipedia", WIKI),
    Pair(
        "https://an.wikipedia.org/static/images/mobile/copyright/wikipedia-tagline-an.svg", "A enciclopedia libre", WIKI
    ),
    # alt="Escudo d&#39;armas"; protocol-relative src takes the page's https.
    Pair(
        f"{THUMB}/0/0a/Escudo_de_Escopete_%28Guadalajara%29.svg/70px-Escudo_de_Escopete_%28Guadalajara%29.svg.png",
        "Escudo d'armas",
        WIKI,
    ),
    Pair(
        f"{THUMB}/9/9c/Castilla-La_Mancha-loc.svg/250px-Castilla-La_Mancha-loc.svg.png",
        "Escopete ubicada en Castiella-La Mancha",
        WIKI,
    ),
    Pair(f"{THUMB}/d/d2/Map_pointer.svg/12px-Map_pointer.svg.png", "Escopete", WIKI),
    # (the <noscript> CentralAutoLogin pixel has alt="": not a pair)
    Pair("https://an.wikipedia.org/static/images/footer/wikimedia-button.png", "Wikimedia Foundation", WIKI),
    Pair("https://an.wikipedia.org/static/images/footer/poweredby_mediawiki_88x31.png", "Powered by MediaWiki", WIKI),
]


def test_whirlwind_page_gives_its_seven_pairs() -> None:
    assert pairs_of(WARC_WHIRLWIND) == {WIKI: EXPECTED_WHIRLWIND}


# --- CC-MAIN-2020-34: eight pages in utf-8, windows-1251, gb2312, gbk --------------------------

EXPECTED_2020 = {
    # <meta charset="utf-8">, no charset in the header; its <base> has target but no href.
    "http://003338.cn/l41/481397.html": [
        ("http://www.chinanews.com/images/banner11.gif", "中国新闻网"),
        ("http://www.gd.gov.cn/ad/sfw2016/20160615_05.jpg", "微博"),
        ("http://www.gd.gov.cn/ad/sfw2016/20160615_07.jpg", "微信"),
        ("http://www.gd.gov.cn/govinc2013/styles2013/images/a-weixin.gif", "微信二维码"),
        ("http://www.gd.gov.cn/ad/sfw2016/xb-navsy20160523.jpg", "首页"),
    ],
    # charset=windows-1251 in the header; the Yandex counter pixel has alt="".
    "http://01spb.ru/company/": [
        ("http://01spb.ru/logo.png", "Стратегия пожарной безопасности"),
        (
            "https://informer.yandex.ru/informer/40512705/3_1_FFFFFFFF_EFEFEFFF_0_pageviews",
            "Яндекс.Метрика",
        ),
    ],
    "http://035.psb556.com/24/i/u_1090813/article.html": [],
    "http://037426.cn/": [],  # 12 <img>, none with non-blank alt
    "http://041696.com/15477/list_6_4.html": [],
    # Unquoted src; the page's own mojibake: alt="...(781&Atilde;\xc2\x97451)" is "Ã" + U+0097.
    "http://044545.com/topic/20200207/015849.html": [
        ("https://cdnimg.acgget.com/images/202003/98a8e084f2bc4be1.jpg", "98a8e084f2bc4be1.jpg (781Ã\x97451)"),
        ("https://cdnimg.acgget.com/images/202002/2ee84a1a1f307328.gif", "2ee84a1a1f307328.gif (460Ã\x97155)"),
        ("https://cdnimg.acgget.com/images/202002/2ee84a1a1f307328.gif", "2ee84a1a1f307328.gif (460Ã\x97155)"),
        ("https://cdnimg.acgget.com/images/202002/2ee84a1a1f307328.gif", "2ee84a1a1f307328.gif (460Ã\x97155)"),
    ],
    "http://0513mt.com/index.php/art/detail/id/8884.html": [],
    "http://05925.net/index.php/vod/type/id/53.html": [],
}


def test_2020_pages_give_exactly_their_pairs_in_their_charsets() -> None:
    expected = {uri: [Pair(url, caption, uri) for url, caption in pairs] for uri, pairs in EXPECTED_2020.items()}
    assert pairs_of(WARC_2020) == expected


# --- dolma (wget): 22 pages, 242 <img> --------------------------------------------------------

SOLDAINI = "https://soldaini.net/"
JOE = "https://joe.cat/"
AMY = "https://amyxzhang.wordpress.com/"
UPLOADS = "https://amyxzhang.wordpress.com/wp-content/uploads"
EXPECTED_DOLMA_PAGES = {
    # <base href=https://soldaini.net/>, unquoted src and base.
    SOLDAINI: [
        Pair("https://soldaini.net/personal-me/me-512.webp", "Luca Soldaini", SOLDAINI),
        Pair(
            "https://soldaini.net/alt.webp",
            "A raccoon wearing a top hat and holding a pizza slice. "
            "Luca sometimes uses this image as their online profile picture.",
            SOLDAINI,
        ),
    ],
    # 21 <img>: 17 project screenshots without alt, then these (single-quoted attributes first).
    JOE: [
        Pair("https://joe.cat/images/me.jpg", "Avatar", JOE),
        Pair("https://joe.cat/images/glyphicons_381_github.png", "github icon", JOE),
        Pair("https://joe.cat/images/glyphicons_377_linked_in.png", "Linkedin icon", JOE),
        Pair("https://joe.cat/images/glyphicons_391_twitter_t.png", "Twitter icon", JOE),
    ],
    # 30 <img>, mostly alt="" or none; "&#038;" in src is "&".
    AMY: [
        Pair(f"{UPLOADS}/2019/01/98032-1t_wuhcqcb0xkgsjupsvjxg.gif?w=840", "Image result for slack gif", AMY),
        Pair(f"{UPLOADS}/2017/06/credibility-wg-004.jpeg?w=555&h=416", "Credibility WG.004", AMY),
        Pair(f"{UPLOADS}/2017/06/credibility-wg-005.jpeg?w=574&h=431", "Credibility WG.005.jpeg", AMY),
        Pair(f"{UPLOADS}/2017/06/untitled.png?w=566&h=298", "Untitled.png", AMY),
    ],
    # Its only <img> with alt (alt="default") is inside an HTML comment.
    "https://maria-antoniak.github.io/": [],
    # src="null" is a relative URL like any other.
    "https://homes.cs.washington.edu/~axz/": [
        Pair("https://homes.cs.washington.edu/~axz/null", "img alt", "https://homes.cs.washington.edu/~axz/")
    ],
}

# Independent count: <img> tags by regex, outside comments and raw-text elements, with a src and
# an alt that is non-blank after entity decoding. The whole file has 242 <img> and 170 with a
# non-empty alt (PROVENANCE.md); 169 = 170 minus maria-antoniak's commented-out alt="default".
# No src in the file is data:/javascript:, and no alt is whitespace only.
DOLMA_TOTAL_PAIRS = 169
_COMMENT = re.compile(rb"<!--.*?-->", re.DOTALL)
_RAW_TEXT = re.compile(rb"<(script|style|textarea|title)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_IMG = re.compile(rb"""<img\b(?:"[^"]*"|'[^']*'|[^'">])*>""", re.IGNORECASE)
_ATTR = re.compile(rb"""([^\s"'=/>]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]+))?""")


def regex_pair_count(body: bytes) -> int:
    count = 0
    for tag in _IMG.finditer(_RAW_TEXT.sub(b"", _COMMENT.sub(b"", body))):
        attributes: dict[bytes, bytes | None] = {}
        for match in _ATTR.finditer(tag.group(0)[4:]):
            value = match.group(2)
            attributes.setdefault(match.group(1).lower(), None if value is None else value.strip(b"\"'"))
        alt = attributes.get(b"alt")
        if attributes.get(b"src") is not None and alt and html.unescape(alt.decode()).strip():
            count += 1
    return count


def test_dolma_pages_written_out_by_hand() -> None:
    found = pairs_of(WARC_DOLMA)
    assert len(found) == 22
    assert {uri: found[uri] for uri in EXPECTED_DOLMA_PAGES} == EXPECTED_DOLMA_PAGES


def test_dolma_total_agrees_with_an_independent_regex_count() -> None:
    pages = responses(WARC_DOLMA)
    assert sum(len(_IMG.findall(body)) for body, _ in pages.values()) == 242
    by_regex = {uri: regex_pair_count(body) for uri, (body, _) in pages.items()}
    results = {uri: html_image_pairs(body, uri, ct) for uri, (body, ct) in pages.items()}
    by_parser = {uri: len(pairs) for uri, (pairs, _) in results.items()}
    assert by_parser == by_regex
    assert sum(stats.non_http_links for _, stats in results.values()) == 0
    assert sum(by_parser.values()) == DOLMA_TOTAL_PAIRS
    assert by_parser["https://www.semanticscholar.org/research/research-team"] == 149


# --- encodings --------------------------------------------------------------------------------

PAGE = "http://a.com/dir/page.html"


def one_caption(body: bytes, content_type: str | None = None) -> str:
    (pair,), _ = html_image_pairs(body, PAGE, content_type)
    return pair.caption


def test_windows_1252_alt_from_the_http_header() -> None:
    body = '<img src="/a.jpg" alt="“Café” – naïve">'.encode("cp1252")
    assert one_caption(body, "text/html; charset=windows-1252") == "“Café” – naïve"


def test_iso_8859_1_label_means_windows_1252_as_in_browsers() -> None:
    body = b'<meta charset="ISO-8859-1"><img src=/a.jpg alt="\x93quoted\x94 caf\xe9">'
    assert one_caption(body) == "“quoted” café"


def test_shift_jis_alt_from_meta_http_equiv() -> None:
    body = '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS"><img src=/a.jpg alt="日本の猫">'
    assert one_caption(body.encode("shift_jis")) == "日本の猫"


def test_gb2312_label_reads_gbk_characters() -> None:
    text = "镕"  # in GBK, not in GB2312: browsers decode gb2312 pages as GBK
    body = b"<meta charset=gb2312><img src=/a.jpg alt=" + text.encode("gbk") + b">"
    assert one_caption(body) == text


def test_http_header_wins_over_meta_and_bom_wins_over_both() -> None:
    body = '<meta charset="utf-8"><img src=/a.jpg alt="Привет">'.encode("cp1251")
    assert one_caption(body, "text/html; charset=windows-1251") == "Привет"
    utf8 = codecs.BOM_UTF8 + '<img src=/a.jpg alt="Grüße">'.encode()
    assert one_caption(utf8, "text/html; charset=iso-8859-1") == "Grüße"
    utf16 = codecs.BOM_UTF16_LE + '<IMG SRC=/a.jpg ALT="Grüße">'.encode("utf-16-le")
    assert one_caption(utf16) == "Grüße"


def test_meta_after_the_first_1024_bytes_is_not_honoured() -> None:
    late = b"<!--" + b"x" * 1100 + b'--><meta charset="windows-1251"><img src=/a.jpg alt="ok">'
    assert page_codec(late) == "utf-8"
    assert page_codec(b'<meta charset="windows-1251">') == "cp1251"
    # A page that can declare UTF-16 in ASCII bytes is not UTF-16 (HTML Standard): read as UTF-8.
    assert one_caption('<meta charset="utf-16"><img src=/a.jpg alt="Grüße">'.encode()) == "Grüße"


@pytest.mark.parametrize("label", ["bogus-charset", "base64", "rot13", ""])
def test_unusable_labels_fall_back_to_utf8(label) -> None:
    body = f'<meta charset="{label}"><img src=/a.jpg alt="Grüße">'.encode()
    assert one_caption(body, f"text/html; charset={label}") == "Grüße"


def test_undecodable_bytes_are_replaced_not_fatal() -> None:
    assert one_caption(b'<img src=/a.jpg alt="bad \xff\xfe bytes">') == "bad \ufffd\ufffd bytes"
    assert one_caption(b'<img src=/a.jpg alt="x\x98y">', "text/html; charset=windows-1251") == "x\ufffdy"


# --- edge cases -------------------------------------------------------------------------------


def urls(markup: str, page: str = PAGE) -> list[str]:
    return [pair.url for pair in html_image_pairs(markup.encode(), page)[0]]


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ('<img src="../a.jpg" alt=x>', "http://a.com/a.jpg"),
        ('<img src="//cdn.b.org/x.png" alt=x>', "http://cdn.b.org/x.png"),
        ('<img src="?q=1" alt=x>', "http://a.com/dir/page.html?q=1"),
        ('<img src="  /x.png#frag " alt=x>', "http://a.com/x.png"),
        ('<img src="/x.png?a=1&amp;b=2" alt=x>', "http://a.com/x.png?a=1&b=2"),
        ('<img src="/caf&#233;.png" alt=x>', "http://a.com/café.png"),
        ('<base href="http://cdn.b.org/static/"><img src="img.jpg" alt=x>', "http://cdn.b.org/static/img.jpg"),
        ('<base href="/assets/"><img src="img.jpg" alt=x>', "http://a.com/assets/img.jpg"),
        ('<img src="img.jpg" alt=x><base href="/late/">', "http://a.com/late/img.jpg"),  # applies to all
        ('<base target=_blank><base href="/first/"><base href="/second/"><img src=i alt=x>', "http://a.com/first/i"),
        ("<IMG SRC=/UP.JPG ALT=Upper>", "http://a.com/UP.JPG"),
        ("<img src=/u.png alt=unquoted>", "http://a.com/u.png"),
        ("<img src=/first.png src=/second.png alt=x>", "http://a.com/first.png"),
    ],
)
def test_urls(markup, expected) -> None:
    assert urls(markup) == [expected]


def test_captions_are_cleaned_like_the_wat_path() -> None:
    markup = '<img src=/1 alt="Tom &amp; Jerry"><img src=/2 alt="caf&#233;\n\t  au lait "><img src=/3 alt=\'a "b"\'>'
    captions = [pair.caption for pair in html_image_pairs(markup.encode(), PAGE)[0]]
    assert captions == ["Tom & Jerry", "café au lait", 'a "b"']


def test_images_without_src_or_with_blank_alt_are_not_candidates() -> None:
    markup = (
        '<img src="/no-alt.jpg"><img src="/empty.jpg" alt=""><img src="/blank.jpg" alt=" \t\n">'
        '<img alt="no src"><img src alt="bare src"><img src="/kept.jpg" alt="kept">'
    )
    pairs, stats = html_image_pairs(markup.encode(), PAGE)
    assert pairs == [Pair("http://a.com/kept.jpg", "kept", PAGE)]
    assert stats == ExtractStats(non_http_links=0)


def test_non_http_sources_are_counted_not_paired() -> None:
    markup = (
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline"><img src="javascript:void(0)" alt="js">'
        '<img src="" alt="empty src"><img src="data:x" alt="  "><img src="/ok.jpg" alt="ok">'
    )
    pairs, stats = html_image_pairs(markup.encode(), PAGE)
    assert [pair.url for pair in pairs] == ["http://a.com/ok.jpg"]
    assert stats.non_http_links == 3  # blank alt is dropped before the src is looked at, as in the WAT path


def test_what_counts_as_an_image_element() -> None:
    markup = (
        "<!-- <img src=/comment.jpg alt=comment> -->"
        "<script>document.write('<img src=/script.jpg alt=script>')</script>"
        "<textarea><img src=/textarea.jpg alt=textarea></textarea>"
        "<head><noscript><img src=/head-noscript.gif alt=head-noscript></noscript></head>"
        "<body><noscript><img src=/noscript.jpg alt=noscript></noscript>"
        "<template><img src=/template.jpg alt=template><template><img src=/nested.jpg alt=nested></template></template>"
        "<svg><img src=/svg.jpg alt=svg></svg><img src=/last.jpg alt=last>"
    )
    names = ("head-noscript.gif", "noscript.jpg", "template.jpg", "nested.jpg", "svg.jpg", "last.jpg")
    assert urls(markup) == [f"http://a.com/{name}" for name in names]


def test_malformed_html_still_gives_the_images_a_browser_sees() -> None:
    markup = "<div><p><b>unclosed <table><tr><img src=/fostered.jpg alt=a><td><img src=/cell.jpg alt=b></div></span>"
    assert urls(markup) == ["http://a.com/fostered.jpg", "http://a.com/cell.jpg"]
    assert urls('<img src=/ok.jpg alt=ok><img src=/cut.jpg alt="never closed') == ["http://a.com/ok.jpg"]


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\xff\xfe\x80" * 64, bytes(range(256)) * 8, b"\x89PNG\r\n\x1a\n<img" + bytes(range(256))],
    ids=["empty", "garbage", "all-bytes", "binary-with-img-marker"],
)
def test_empty_or_binary_bodies_give_no_pairs(body) -> None:
    assert html_image_pairs(body, PAGE, "application/octet-stream") == ([], ExtractStats())


def test_bodies_without_an_img_tag_are_not_parsed(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("parsed a page without <img")

    monkeypatch.setattr(html_images, "LexborHTMLParser", refuse)
    assert html_image_pairs(b"<html><body><p>no images</p></body></html>", PAGE) == ([], ExtractStats())
    with pytest.raises(AssertionError):
        html_image_pairs(b"<IMG src=/a.jpg alt=a>", PAGE)
