"""Write WAT files in Common Crawl's current layout (one gzip member per record).

Used by the offline demo and by tests to make WATs whose image links point at a loopback
server; the records carry the same JSON paths the extractor reads from real crawls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from io import BytesIO
from typing import BinaryIO

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

SOFTWARE = "clipcrawl wat_writer (ia-web-commons layout)"


@dataclasses.dataclass(frozen=True)
class ImageLink:
    src: str  # as written in the page: relative or absolute
    alt: str | None  # None: the <img> had no alt attribute


@dataclasses.dataclass(frozen=True)
class Page:
    url: str
    images: Sequence[ImageLink]
    base_href: str | None = None


def _record_id() -> str:
    return f"<urn:uuid:{uuid.uuid4()}>"


def page_metadata(page: Page, warc_date: str) -> dict:
    """The WAT JSON for one HTML response, with only the fields extraction relies on."""
    links = []
    for image in page.images:
        link = {"path": "IMG@/src", "url": image.src}
        if image.alt is not None:
            link["alt"] = image.alt
        links.append(link)
    head: dict = {"Title": page.url}
    if page.base_href is not None:
        head["Base"] = page.base_href
    return {
        "Container": {"Compressed": True, "Filename": "synthetic.warc.gz"},
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Metadata": {
                "WARC-Type": "response",
                "WARC-Target-URI": page.url,
                "WARC-Date": warc_date,
                "WARC-Record-ID": _record_id(),
            },
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=response",
                "HTTP-Response-Metadata": {
                    "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                    "Headers": {"Content-Type": "text/html; charset=UTF-8"},
                    "HTML-Metadata": {"Head": head, "Links": links},
                },
            },
        },
    }


def write_wat(sink: BinaryIO, pages: Iterable[Page], date: dt.datetime | None = None) -> int:
    """Write a warcinfo record and one metadata record per page; returns the page count."""
    warc_date = (date or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    writer = WARCWriter(sink, gzip=True)
    info = writer.create_warcinfo_record("synthetic.warc.wat.gz", {"Software-Info": SOFTWARE})
    writer.write_record(info)
    count = 0
    for page in pages:
        payload = json.dumps(page_metadata(page, warc_date)).encode("utf-8")
        headers = StatusAndHeaders(
            "",
            [
                ("WARC-Type", "metadata"),
                ("WARC-Target-URI", page.url),
                ("WARC-Date", warc_date),
                ("WARC-Record-ID", _record_id()),
                ("WARC-Refers-To", _record_id()),
                ("Content-Type", "application/json"),
            ],
            protocol="WARC/1.0",
        )
        record = writer.create_warc_record(
            page.url, "metadata", payload=BytesIO(payload), length=len(payload), warc_headers=headers
        )
        writer.write_record(record)
        count += 1
    return count
