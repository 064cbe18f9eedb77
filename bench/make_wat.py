"""Write a WAT file shaped like Common Crawl's, with the image/alt pairs it must yield.

Real WATs are too large to ship and the public samples hold a handful of image links
(tests/data/PROVENANCE.md), so the extraction benchmark runs on this file instead. It
follows the current ia-web-commons layout seen in ``tests/data/whirlwind.warc.wat.gz``
(``Container`` before ``Envelope``) and the link objects of the 2014 sample:

* one ``warcinfo`` record, then one metadata record for the source WARC's warcinfo, then
  per capture the three metadata records Common Crawl writes (request, response, metadata);
* every record is its own gzip member; the JSON is compact and UTF-8, as in real files;
* ~85 % of responses are HTML pages (3-30 KB of JSON), the rest redirects or binaries with
  no ``HTML-Metadata``; ~47 % of pages carry ``IMG@/src`` links, ~7 per such page on average,
  mixed with ``A@/href``, ``FORM@/action``, ``IFRAME@/src`` and ``SCRIPT@/src`` links;
* image ``src`` values are absolute, protocol-relative, root-relative, ``./``, ``../`` or
  ``data:`` URIs, sometimes with spaces around them, a ``#fragment``, a query, or resolved
  against a ``<base href>``; alt text is missing, empty, blank, padded, non-ASCII, or (in
  ~10 % of pages, like 2014-era WATs) written with raw entities.

The generator picks every pair's resolved URL and clean caption first and then writes the
form the page would have, so the ground truth does not depend on any extractor's code.
Output depends only on ``(records, seed)``: same bytes every run.

Usage: ``python bench/make_wat.py OUT.warc.wat.gz --records 30000 --seed 0 [--truth PAIRS.tsv]``
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import hashlib
import html
import json
import random
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

DEFAULT_RECORDS = 30_000
GZIP_LEVEL = 6  # java.util.zip's default, which ia-web-commons uses
SOFTWARE = "ia-web-commons.1.1.10-SNAPSHOT-20240513074037 (clipcrawl bench/make_wat.py)"
WAT_FILENAME = "CC-MAIN-20240517233122-20240518023122-00000.warc.wat.gz"
WARC_FILENAME = "CC-MAIN-20240517233122-20240518023122-00000.warc.gz"
CRAWL_START = dt.datetime(2024, 5, 17, 23, 31, 22, tzinfo=dt.timezone.utc)
WAT_START = dt.datetime(2024, 5, 31, 1, 16, 45, tzinfo=dt.timezone.utc)

# Shares of the generated population (see the module docstring).
HTML_SHARE, REDIRECT_SHARE = 0.85, 0.09  # the rest: binary responses (pdf, jpeg, ...)
PAGES_WITH_IMAGES = 0.47
LEGACY_ENTITY_PAGES = 0.10
BASE_HREF_PAGES = 0.08
# What an <img> carries as alt: caption, no alt key, alt="", whitespace-only alt.
ALT_KINDS = ("caption", "missing", "empty", "blank")
ALT_WEIGHTS = (0.58, 0.26, 0.12, 0.04)
# How an image's src is written relative to the page (or <base href>).
SRC_FORMS = ("absolute", "protocol_relative", "root_relative", "dir_relative", "parent_relative", "data_uri")
SRC_WEIGHTS = (0.30, 0.08, 0.30, 0.20, 0.06, 0.06)

WORDS = (
    "home about news blog shop contact search login account cart product products category "
    "article story photo photos gallery image images video team service services support help "
    "privacy terms policy cookie cookies press events event travel food recipe recipes garden "
    "house design interior fashion style sport sports football music film review reviews guide "
    "city hotel beach mountain river lake winter summer spring autumn family kids school "
    "science health market business finance tech mobile phone camera car cars bike road map "
    "church castle museum art artist paint kitchen table chair lamp sofa bed dress shoes bag "
    "watch ring coffee tea wine beer bread cake pizza salad chicken fish garden flower tree dog "
    "cat bird horse red blue green black white small large new best top free sale offer"
).split()
TLDS = (".com", ".com", ".com", ".org", ".net", ".de", ".fr", ".ru", ".co.uk", ".jp", ".nl", ".it", ".es", ".pl")
CDN_PREFIXES = ("cdn", "static", "img", "images", "media", "assets")
IMAGE_EXTS = (".jpg", ".jpg", ".jpeg", ".png", ".png", ".webp", ".gif", ".svg")
# Captions in other scripts (they exercise UTF-8 through gzip, JSON and the extractor).
NON_ASCII_CAPTIONS = (
    "Straße im Winter", "Café crème et croissant", "Größe ändern", "Niño jugando en la playa",
    "Москва зимой", "Красная площадь ночью", "東京の夜景", "富士山と桜", "北京烤鸭", "서울 야경",
    "Ελληνικό χωριό", "مسجد في المدينة", "תל אביב בלילה", "Łódź — stare miasto",
    "İstanbul Boğazı", "Ночной город 🌃", "Sunset 🌅 over the bay", "Crème brûlée",
)
# Captions whose text has characters a legacy page writes as entities.
ENTITY_CAPTIONS = (
    "Salt & Pepper", "Fish & Chips", 'The "Best" Pizza in Town', "Chef's knife", "5 < 10 > 3",
    "Tom & Jerry's \"Big\" Day", "R&D Lab", "Q&A session",
)
# Captions that repeat across sites, as logos and social icons do on real pages.
COMMON_CAPTIONS = ("Logo", "logo", "Facebook", "Twitter", "Instagram", "YouTube", "Search", "Menu", "Home")
PIXEL_GIF = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
USER_AGENT = "CCBot/2.0 (https://commoncrawl.org/faq/)"
ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SERVERS = ("nginx", "Apache", "cloudflare", "Microsoft-IIS/10.0", "LiteSpeed", "nginx/1.18.0 (Ubuntu)")
LANGUAGES = (("en", "eng", "ENGLISH"), ("de", "deu", "GERMAN"), ("fr", "fra", "FRENCH"), ("ru", "rus", "RUSSIAN"),
             ("ja", "jpn", "Japanese"), ("es", "spa", "SPANISH"), ("zh", "zho", "Chinese"))


@dataclasses.dataclass(frozen=True)
class ExpectedPair:
    """A pair a correct extractor must produce: absolute http(s) URL, cleaned caption."""

    url: str
    caption: str
    page_url: str


@dataclasses.dataclass
class Summary:
    """What was written: counts for the benchmark table and the ground-truth pairs."""

    path: str
    records: int = 0  # WAT metadata records (the warcinfo record is not counted)
    captures: int = 0
    responses: int = 0
    html_pages: int = 0
    pages_with_images: int = 0
    image_links: int = 0
    blank_alt_links: int = 0  # http(s) images whose alt is non-empty but only whitespace
    uncompressed_bytes: int = 0
    compressed_bytes: int = 0
    seconds: float = 0.0
    pairs: list[ExpectedPair] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Base:
    """What relative URLs resolve against: scheme, host and directory (ends with '/')."""

    scheme: str
    host: str
    directory: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.directory}"


class _Pages:
    """Random but deterministic crawl content: hosts, URLs, captions, link lists."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.vocabulary: tuple[str, ...] | list[str] = WORDS

    def site_vocabulary(self) -> None:
        """A page repeats its site's few words (menus, categories), as real pages do;
        this also gives the records a realistic gzip ratio."""
        self.vocabulary = self.rng.sample(WORDS, 24)

    def words(self, low: int, high: int) -> list[str]:
        return self.rng.choices(self.vocabulary, k=self.rng.randint(low, high))

    def slug(self, low: int = 1, high: int = 4) -> str:
        return "-".join(self.words(low, high))

    def host(self) -> str:
        prefix = self.rng.choice(("www.", "www.", "", "blog.", "shop.", "m."))
        return f"{prefix}{self.slug(1, 2)}{self.rng.randint(1, 999)}{self.rng.choice(TLDS)}"

    def directory(self) -> str:
        return "/" + "".join(f"{word}/" for word in self.words(0, 3))

    def page_url(self) -> tuple[str, _Base]:
        scheme = "https" if self.rng.random() < 0.75 else "http"
        host, directory = self.host(), self.directory()
        shape = self.rng.random()
        if shape < 0.5:
            path = f"{directory}{self.slug()}.html"
        elif shape < 0.8:
            path = f"{directory}{self.slug()}/"
            directory = path
        else:
            path = f"{directory}index.php?id={self.rng.randint(1, 99999)}&lang=en"
        return f"{scheme}://{host}{path}", _Base(scheme, host, directory)

    def text(self) -> str:
        """Anchor text or caption in English words, single-spaced, not padded."""
        words = self.words(1, 9)
        if self.rng.random() < 0.5:
            words[0] = words[0].capitalize()
        return " ".join(words)

    def caption(self) -> str:
        roll = self.rng.random()
        if roll < 0.12:
            return self.rng.choice(NON_ASCII_CAPTIONS)
        if roll < 0.18:
            return self.rng.choice(ENTITY_CAPTIONS)
        if roll < 0.28:
            return self.rng.choice(COMMON_CAPTIONS)
        return self.text()

    def image_name(self) -> str:
        name = f"{self.slug(1, 3)}-{self.rng.randint(1, 9999)}{self.rng.choice(IMAGE_EXTS)}"
        roll = self.rng.random()
        if roll < 0.15:
            name += f"?w={self.rng.choice((150, 300, 640, 1024))}&h={self.rng.choice((100, 200, 480))}&q=80"
        elif roll < 0.17:
            name = name.replace("-", " ", 1)  # a literal space in src, kept by the WAT
        return name

    def a_link(self, base: _Base) -> dict[str, str]:
        roll = self.rng.random()
        if roll < 0.45:
            url = f"/{self.slug(1, 2)}/{self.slug(2, 6)}/"
        elif roll < 0.70:
            url = f"{base.scheme}://{base.host}/{self.slug(1, 2)}/{self.slug(2, 5)}.html"
        elif roll < 0.85:
            url = f"https://{self.host()}/{self.slug(1, 3)}"
        elif roll < 0.92:
            url = "#"
        elif roll < 0.96:
            url = f"{self.slug(1, 2)}.html"
        else:
            url = self.rng.choice(("javascript:void(0)", f"mailto:info@{base.host}", "tel:+1555010203"))
        link = {"path": "A@/href", "url": url}
        if self.rng.random() < 0.85:
            link["text"] = self.text()
        if self.rng.random() < 0.12:
            link["title"] = self.text()
        if self.rng.random() < 0.08:
            link["target"] = "_blank"
        if self.rng.random() < 0.05:
            link["rel"] = "nofollow noopener"
        return link

    def other_link(self, base: _Base) -> dict[str, str]:
        roll = self.rng.random()
        if roll < 0.4:
            return {"path": "SCRIPT@/src", "url": f"/js/{self.slug(1, 2)}.min.js?ver=6.{self.rng.randint(0, 9)}",
                    "type": "text/javascript"}
        if roll < 0.7:
            return {"path": "FORM@/action", "url": f"/{self.slug(1, 1)}/", "method": "post"}
        return {"path": "IFRAME@/src", "url": f"https://www.youtube.com/embed/{base64.urlsafe_b64encode(self.rng.randbytes(8)).decode()[:11]}"}

    def head(self, title: str, base: _Base) -> dict[str, Any]:
        metas = [
            {"name": "viewport", "content": "width=device-width, initial-scale=1"},
            {"name": "description", "content": " ".join(self.words(8, 30))},
        ]
        if self.rng.random() < 0.6:
            metas += [
                {"property": "og:title", "content": title},
                {"property": "og:type", "content": "website"},
                {"property": "og:image", "content": f"{base.scheme}://{base.host}/og/{self.image_name()}"},
            ]
        if self.rng.random() < 0.4:
            metas.append({"name": "robots", "content": "index, follow, max-image-preview:large"})
        links = [
            {"path": "LINK@/href", "url": f"/css/{self.slug(1, 2)}.css?ver={self.rng.randint(1, 99)}",
             "rel": "stylesheet", "type": "text/css"}
            for _ in range(self.rng.randint(1, 6))
        ]
        links.append({"path": "LINK@/href", "url": "/favicon.ico", "rel": "icon"})
        links.append({"path": "LINK@/href", "url": f"{base.scheme}://{base.host}{base.directory}", "rel": "canonical"})
        scripts = [{"path": "SCRIPT@/src", "url": f"/js/{self.slug(1, 2)}.js", "type": "text/javascript"}
                   for _ in range(self.rng.randint(0, 5))]
        return {"Title": title, "Metas": metas, "Link": links, "Scripts": scripts}


def _image_src(pages: _Pages, base: _Base) -> tuple[str, str | None]:
    """``(src as written, resolved http(s) URL or None)`` for one ``<img>``."""
    rng = pages.rng
    form = rng.choices(SRC_FORMS, SRC_WEIGHTS)[0]
    name = pages.image_name()
    if form == "data_uri":
        return PIXEL_GIF, None
    if form == "absolute":
        cdn = f"{rng.choice(CDN_PREFIXES)}.{pages.slug(1, 1)}{rng.choice(TLDS)}"
        target = f"{rng.choice(('https', 'http'))}://{cdn}{pages.directory()}{name}"
        src = target
    elif form == "protocol_relative":
        cdn = f"{rng.choice(CDN_PREFIXES)}.{pages.slug(1, 1)}{rng.choice(TLDS)}"
        path = f"{pages.directory()}{name}"
        target, src = f"{base.scheme}://{cdn}{path}", f"//{cdn}{path}"
    elif form == "root_relative":
        path = f"/wp-content/uploads/{rng.randint(2015, 2024)}/{rng.randint(1, 12):02d}/{name}"
        target, src = f"{base.scheme}://{base.host}{path}", path
    elif form == "parent_relative" and base.directory != "/":
        parent = base.directory[: base.directory.rstrip("/").rfind("/") + 1]
        target, src = f"{base.url.removesuffix(base.directory)}{parent}img/{name}", f"../img/{name}"
    else:  # dir_relative (and parent_relative on a top-level page)
        src = f"images/{name}" if rng.random() < 0.7 else f"./images/{name}"
        target = f"{base.url}images/{name}"
    roll = rng.random()
    if roll < 0.03:
        src += "#zoom"  # fragments never reach a server: the pair's URL has none
    elif roll < 0.06:
        src = f" {src}\n"  # HTML strips spaces around src; the WAT keeps them
    return src, target


def _written(text: str, legacy: bool, rng: random.Random) -> str:
    """A clean value as the page's attribute carries it (legacy: raw entities)."""
    if not legacy:
        return text
    encoded = html.escape(text, quote=True)
    if rng.random() < 0.3:
        encoded = "".join(c if ord(c) < 128 else f"&#{ord(c)};" for c in encoded)
    return encoded


def _alt(pages: _Pages, legacy: bool) -> tuple[str | None, str | None]:
    """``(alt as written or None, expected caption or None)`` for one ``<img>``."""
    rng = pages.rng
    kind = rng.choices(ALT_KINDS, ALT_WEIGHTS)[0]
    if kind == "missing":
        return None, None
    if kind == "empty":
        return "", None
    if kind == "blank":
        return rng.choice((" ", "  ", "\n\t", "&nbsp;" if legacy else "\u00a0")), None
    caption = pages.caption()
    written = _written(caption, legacy, rng)
    if rng.random() < 0.08:  # alt text wrapped over lines in the HTML source
        written = "\n   " + written.replace(" ", "\n      ", 1) + "  "
    return written, caption


def _html_metadata(pages: _Pages, page_url: str, page_base: _Base, summary: Summary) -> dict[str, Any]:
    rng = pages.rng
    pages.site_vocabulary()
    legacy = rng.random() < LEGACY_ENTITY_PAGES
    base, base_href = page_base, None
    if rng.random() < BASE_HREF_PAGES:
        if rng.random() < 0.5:
            base = _Base("https", f"static.{page_base.host}", "/site/")
            base_href = base.url
        else:
            base = _Base(page_base.scheme, page_base.host, f"/{pages.slug(1, 1)}/")
            base_href = base.directory
    title = pages.caption()
    head = pages.head(_written(title, legacy, rng), page_base)
    if base_href is not None:
        head["Base"] = base_href
    links: list[dict[str, str]] = [pages.a_link(page_base) for _ in range(_link_count(rng))]
    links += [pages.other_link(page_base) for _ in range(rng.randint(0, 4))]
    rng.shuffle(links)
    pages.vocabulary = WORDS
    if rng.random() < PAGES_WITH_IMAGES:
        summary.pages_with_images += 1
        count = min(80, 1 + int(rng.expovariate(1 / 6)))
        positions = sorted(rng.sample(range(len(links) + count), count))
        for position in positions:
            links.insert(position, _image_link(pages, page_url, base, legacy, summary))
    return {"Head": head, "Links": links}


def _link_count(rng: random.Random) -> int:
    return max(3, min(600, int(rng.lognormvariate(4.2, 0.7))))  # median ~67 links


def _image_link(pages: _Pages, page_url: str, base: _Base, legacy: bool, summary: Summary) -> dict[str, str]:
    src, target = _image_src(pages, base)
    alt, caption = _alt(pages, legacy)
    summary.image_links += 1
    link = {"path": "IMG@/src", "url": _written(src, legacy, pages.rng) if target else src}
    if alt is not None:
        link["alt"] = alt
        if target is not None and caption is None and alt:
            summary.blank_alt_links += 1  # whitespace, U+00A0 or "&nbsp;": blank once cleaned
    if pages.rng.random() < 0.1:
        link["title"] = pages.text()
    if target is not None and caption is not None:
        summary.pairs.append(ExpectedPair(target, caption, page_url))
    return link


class _Writer:
    """Builds the JSON envelopes and writes one gzip member per WARC record."""

    def __init__(self, sink: Any, rng: random.Random, summary: Summary) -> None:
        self.sink, self.rng, self.summary = sink, rng, summary
        self.pages = _Pages(rng)
        self.offset = 0  # in the source WARC, for Container.Offset
        self.warcinfo_id = self.uuid()

    def uuid(self) -> str:
        return f"<urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}>"

    def digest(self) -> str:
        return "sha1:" + base64.b32encode(self.rng.randbytes(20)).decode()

    def member(self, headers: list[tuple[str, str]], payload: bytes) -> None:
        head = "WARC/1.0\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        raw = head.encode("utf-8") + payload + b"\r\n\r\n"
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        data = compressor.compress(raw) + compressor.flush()
        self.sink.write(data)
        self.summary.uncompressed_bytes += len(raw)
        self.summary.compressed_bytes += len(data)

    def warcinfo(self) -> None:
        fields = (
            f"Software-Info: {SOFTWARE}\r\nExtracted-Date: {WAT_START:%a, %d %b %Y %H:%M:%S GMT}\r\n"
            "ip: 10.67.67.159\r\nhostname: ip-10-67-67-159.ec2.internal\r\nformat: WARC File Format 1.0\r\n"
            "conformsTo: http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf\r\n"
        ).encode()
        self.member(
            [("WARC-Type", "warcinfo"), ("WARC-Date", _iso(WAT_START)), ("WARC-Filename", WAT_FILENAME),
             ("WARC-Record-ID", self.uuid()), ("Content-Type", "application/warc-fields"),
             ("Content-Length", str(len(fields))), ("WARC-Block-Digest", _sha1(fields))],
            fields,
        )

    def metadata(self, target_uri: str, refers_to: str, envelope: dict[str, Any]) -> None:
        """One WAT JSON record describing one record of the source WARC."""
        length = self.rng.randint(300, 30000)
        container = {
            "Filename": WARC_FILENAME, "Compressed": True, "Offset": str(self.offset),
            "Gzip-Metadata": {"Deflate-Length": str(length), "Header-Length": "10", "Footer-Length": "8",
                              "Inflated-CRC": str(self.rng.randint(-2**31, 2**31 - 1)),
                              "Inflated-Length": str(length * 4)},
        }
        self.offset += length + 18
        payload = json.dumps({"Container": container, "Envelope": envelope}, ensure_ascii=False,
                             separators=(",", ":")).encode("utf-8")
        digest = _sha1(payload)
        self.member(
            [("WARC-Type", "metadata"), ("WARC-Target-URI", target_uri),
             ("WARC-Date", _iso(WAT_START + dt.timedelta(seconds=self.summary.records // 40))),
             ("WARC-Record-ID", self.uuid()), ("WARC-Refers-To", refers_to),
             ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
             ("WARC-Payload-Digest", digest), ("WARC-Block-Digest", digest)],
            payload,
        )
        self.summary.records += 1

    def source_warcinfo(self) -> None:
        info = {
            "isPartOf": "CC-MAIN-2024-22", "publisher": "Common Crawl", "description":
            "Wide crawl of the web for May 2024", "operator": "Common Crawl Admin (info@commoncrawl.org)",
            "hostname": "ip-10-67-67-159.ec2.internal", "software": "Apache Nutch 1.20 (modified, https://github.com/commoncrawl/nutch/)",
            "robots": "checked via crawler-commons 1.5-SNAPSHOT", "format": "WARC File Format 1.1",
        }
        header = {"WARC-Type": "warcinfo", "WARC-Date": _iso(CRAWL_START), "WARC-Record-ID": self.warcinfo_id,
                  "Content-Length": "498", "Content-Type": "application/warc-fields", "WARC-Filename": WARC_FILENAME}
        envelope = {"Payload-Metadata": {"Actual-Content-Type": "application/warc-fields", "WARC-Info-Metadata": info,
                                         "Actual-Content-Length": "498", "Trailing-Slop-Length": "0"},
                    "Format": "WARC", "WARC-Header-Length": "260", "WARC-Header-Metadata": header}
        self.metadata(WARC_FILENAME, self.warcinfo_id, envelope)

    def captures(self, limit: int) -> None:
        """Write captures (request, response, metadata) until ``limit`` records exist."""
        while self.summary.records < limit:
            self.summary.captures += 1
            page_url, base = self.pages.page_url()
            when = CRAWL_START + dt.timedelta(seconds=self.summary.captures * 2)
            ids = {kind: self.uuid() for kind in ("request", "response", "metadata")}
            ip = ".".join(str(self.rng.randint(low, high)) for low, high in ((1, 223), (0, 255), (0, 255), (1, 254)))
            builders = (("request", self.request), ("response", self.response), ("metadata", self.fetch_info))
            for kind, build in builders:
                if self.summary.records >= limit:
                    break
                header = {"WARC-Type": kind, "WARC-Date": _iso(when), "WARC-Record-ID": ids[kind],
                          "Content-Length": "0", "Content-Type": "", "WARC-Warcinfo-ID": self.warcinfo_id,
                          "WARC-Target-URI": page_url}
                if kind != "request":
                    header["WARC-Concurrent-To"] = ids["request"]
                envelope = build(page_url, base, header, ip)
                self.metadata(page_url, ids[kind], envelope)

    def request(self, page_url: str, base: _Base, header: dict[str, str], ip: str) -> dict[str, Any]:
        header.update({"Content-Type": "application/http; msgtype=request", "WARC-IP-Address": ip})
        path = page_url.split(base.host, 1)[1] or "/"
        http = {
            "Request-Message": {"Method": "GET", "Path": path, "Version": "HTTP/1.1"},
            "Headers-Length": str(self.rng.randint(250, 320)),
            "Headers": {"User-Agent": USER_AGENT, "Accept": ACCEPT,
                        "Accept-Language": "en-US,en;q=0.5", "Accept-Encoding": "br,gzip", "Host": base.host,
                        "Connection": "Keep-Alive"},
            "Entity-Length": "0", "Entity-Digest": "sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ",
            "Entity-Trailing-Slop-Length": "0",
        }
        return self.envelope(header, "application/http; msgtype=request", "HTTP-Request-Metadata", http)

    def response(self, page_url: str, base: _Base, header: dict[str, str], ip: str) -> dict[str, Any]:
        self.summary.responses += 1
        header.update({"Content-Type": "application/http; msgtype=response", "WARC-IP-Address": ip,
                       "WARC-Payload-Digest": self.digest(), "WARC-Block-Digest": self.digest()})
        roll = self.rng.random()
        length = self.rng.randint(2000, 400000)
        headers = {"Date": f"{CRAWL_START:%a, %d %b %Y %H:%M:%S GMT}", "Server": self.rng.choice(SERVERS)}
        http: dict[str, Any] = {"Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"}}
        if roll < REDIRECT_SHARE:
            http["Response-Message"] = {"Version": "HTTP/1.1", "Status": "301", "Reason": "Moved Permanently"}
            headers.update({"Location": f"https://{base.host}/{self.pages.slug()}/", "Content-Length": "0"})
            length = 0
        elif roll < REDIRECT_SHARE + (1 - HTML_SHARE - REDIRECT_SHARE):
            headers.update({"Content-Type": self.rng.choice(("application/pdf", "image/jpeg", "text/plain")),
                            "Content-Length": str(length)})
        else:
            headers.update({"Content-Type": "text/html; charset=UTF-8", "X-Crawler-Content-Encoding": "gzip",
                            "X-Crawler-Content-Length": str(length // 4), "Content-Length": str(length),
                            "Cache-Control": "max-age=0, no-cache", "Vary": "Accept-Encoding",
                            "X-Powered-By": self.rng.choice(("PHP/8.1.27", "Express", "WP Engine"))})
            if self.rng.random() < 0.5:
                headers["Set-Cookie"] = f"session={self.rng.getrandbits(64):016x}; path=/; HttpOnly"
        http.update({"Headers-Length": str(self.rng.randint(200, 900)), "Headers": headers,
                     "Entity-Length": str(length), "Entity-Digest": self.digest(), "Entity-Trailing-Slop-Length": "0"})
        if "Content-Type" in headers and headers["Content-Type"].startswith("text/html"):
            self.summary.html_pages += 1
            http["HTML-Metadata"] = _html_metadata(self.pages, page_url, base, self.summary)
        return self.envelope(header, "application/http; msgtype=response", "HTTP-Response-Metadata", http)

    def fetch_info(self, page_url: str, base: _Base, header: dict[str, str], ip: str) -> dict[str, Any]:
        header["Content-Type"] = "application/warc-fields"
        code, iso, name = self.rng.choice(LANGUAGES)
        languages = json.dumps({"reliable": True, "text-bytes": self.rng.randint(100, 90000), "languages": [
            {"code": code, "code-iso-639-3": iso, "text-covered": 0.99, "score": 1021.0, "name": name}]})
        records = [{"Name": "fetchTimeMs", "Value": str(self.rng.randint(20, 5000))},
                   {"Name": "charset-detected", "Value": "UTF-8"},
                   {"Name": "languages-cld2", "Value": languages}]
        meta = {"Metadata-Records": records, "Actual-Content-Length": "260", "Trailing-Slop-Length": "0"}
        return self.envelope(header, "application/metadata-fields", "WARC-Metadata-Metadata", meta)

    def envelope(self, header: dict[str, str], content_type: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        length = str(self.rng.randint(200, 60000))
        header["Content-Length"] = length
        payload = {"Actual-Content-Type": content_type, key: body, "Actual-Content-Length": length,
                   "Trailing-Slop-Length": "4", "Block-Digest": self.digest()}
        return {"Payload-Metadata": payload, "Format": "WARC/1.0",
                "WARC-Header-Length": str(self.rng.randint(300, 700)), "WARC-Header-Metadata": header}


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def write_wat(path: str | Path, records: int = DEFAULT_RECORDS, seed: int = 0) -> Summary:
    """Write ``records`` WAT metadata records (plus the warcinfo) to ``path``; the summary
    holds the expected pairs in file order. The last capture is cut short when ``records - 1``
    is not a multiple of 3."""
    if records < 1:
        raise ValueError("records must be >= 1")
    started = time.perf_counter()
    summary = Summary(path=str(path))
    with open(path, "wb") as sink:
        writer = _Writer(sink, random.Random(seed), summary)
        writer.warcinfo()
        writer.source_warcinfo()
        writer.captures(records)
    summary.seconds = time.perf_counter() - started
    return summary


def write_truth(summary: Summary, path: str | Path) -> None:
    """The expected pairs as TSV: url, caption, page_url (tabs/newlines in captions escaped)."""
    with open(path, "w", encoding="utf-8") as out:
        for pair in summary.pairs:
            out.write("\t".join(json.dumps(v, ensure_ascii=False) for v in (pair.url, pair.caption, pair.page_url)))
            out.write("\n")


def describe(summary: Summary) -> str:
    return (
        f"{summary.path}: {summary.records} metadata records ({summary.captures} captures, "
        f"{summary.html_pages}/{summary.responses} responses are HTML, {summary.pages_with_images} with images), "
        f"{summary.image_links} IMG@/src links, {len(summary.pairs)} expected pairs, "
        f"{summary.uncompressed_bytes / 1e6:.1f} MB uncompressed, {summary.compressed_bytes / 1e6:.1f} MB gzip, "
        f"written in {summary.seconds:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output path, e.g. bench.warc.wat.gz")
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="WAT metadata records to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truth", help="also write the expected pairs to this TSV file (JSON-quoted fields)")
    args = parser.parse_args(argv)
    summary = write_wat(args.out, args.records, args.seed)
    if args.truth:
        write_truth(summary, args.truth)
    print(describe(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
