"""The WAT/WARC reader: both readers agree on every fixture, and each kind of bad record is
reported with its reason while the records after it are still read.

The damaged files are made from the genuine 2014 WAT (tests/data): its 9 records are cut
apart byte-exactly and one of them is spoiled in one way per test.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from clipcrawl.io.archive import HTML, WAT_JSON, iter_archive, resolve_reader
from clipcrawl.io.warc_framing import BadRecord
from clipcrawl.transforms.extract import ReadReport, iter_pairs
from tests.conftest import DATA as DATA_DIR
from tests.conftest import PAGE_2014, PAIRS_2014, WAT_2014

READERS = ("fastwarc", "warcio")


def records_2014() -> list[bytes]:
    """The 9 records of the 2014 WAT, byte-exact, each with its trailing CRLF CRLF."""
    data = Path(WAT_2014).read_bytes()
    starts = [m.start() for m in re.finditer(rb"WARC/1\.0\r\n", data)]
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]


def write(path: Path, records: list[bytes], gz: bool) -> str:
    path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records) if gz else b"".join(records))
    return str(path)


def summary(uri: str, reader: str) -> list[tuple]:
    return [
        (type(item).__name__, getattr(item, "kind", None), getattr(item, "target_uri", None), len(getattr(item, "payload", b"")))
        for item in iter_archive(uri, reader)
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in DATA_DIR.iterdir() if p.name != "PROVENANCE.md"))
def test_both_readers_give_the_same_records_on_every_fixture(name: str) -> None:
    uri = str(DATA_DIR / name)
    assert summary(uri, "fastwarc") == summary(uri, "warcio")
    assert not [item for item in iter_archive(uri) if isinstance(item, BadRecord)]


@pytest.mark.parametrize("name", sorted(p.name for p in DATA_DIR.iterdir() if p.name != "PROVENANCE.md"))
def test_both_readers_give_the_same_pairs_and_report_on_every_fixture(name: str) -> None:
    found = []
    for reader in READERS:
        report = ReadReport()
        pairs = list(iter_pairs(str(DATA_DIR / name), reader, report))
        found.append((pairs, report.records, dict(report.bad_records), report.non_http_links))
    assert found[0] == found[1]


@pytest.mark.parametrize(
    ("name", "kind", "count"),
    [
        ("CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat", WAT_JSON, 8),
        ("CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wat.gz", WAT_JSON, 8),
        ("whirlwind.warc.wat.gz", WAT_JSON, 1),
        ("CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.part1.warc.gz", HTML, 1),
        ("whirlwind.warc.gz", HTML, 1),
        ("CC-MAIN-20200808165417-20200808195417-00395.part1.warc.gz", HTML, 8),
        ("dolma-wget-sample-0000.warc.gz", HTML, 22),  # PROVENANCE: 22 responses, all HTML
    ],
)
def test_record_kinds_and_counts_match_the_provenance(name: str, kind: str, count: int) -> None:
    items = list(iter_archive(str(DATA_DIR / name)))
    assert [item.kind for item in items] == [kind] * count


def test_wget_target_uris_lose_their_angle_brackets() -> None:
    uris = [item.target_uri for item in iter_archive(str(DATA_DIR / "dolma-wget-sample-0000.warc.gz"))]
    assert uris[0] == "https://www.semanticscholar.org/research/research-team"
    assert not [uri for uri in uris if "<" in uri or ">" in uri]


@pytest.mark.parametrize("reader", READERS)
def test_the_2014_pairs_from_both_readers(reader: str) -> None:
    pairs = list(iter_pairs(str(WAT_2014), reader))
    assert [(p.url, p.caption) for p in pairs] == PAIRS_2014
    assert {p.page_url for p in pairs} == {PAGE_2014}


def spoil(records: list[bytes], index: int, how: str) -> list[bytes]:
    spoiled = list(records)
    record = spoiled[index]
    if how == "lf_headers":
        head, _, body = record.partition(b"\r\n\r\n")
        spoiled[index] = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    elif how == "content_length":
        spoiled[index] = re.sub(rb"Content-Length: (\d+)", lambda m: b"Content-Length: %d" % (int(m[1]) + 40), record)
    elif how == "not_utf8":
        spoiled[index] = record.replace(b'"Previous"', b'"Pr\xe9vious"')  # latin-1 byte, same length
    elif how == "invalid_json":
        spoiled[index] = record.replace(b'{"Envelope"', b'{"Envelope" ', 1)[:-5] + b"\r\n\r\n"  # same length
    elif how == "garbage":
        spoiled.insert(index, b"this is not a WARC record\r\n")
    else:
        raise ValueError(how)
    return spoiled


# Record 6 is the metadata record of the Australia page's response, the one with the pairs;
# spoiling record 3 (another page) must leave those pairs intact.
@pytest.mark.parametrize("gz", [True, False], ids=["gzip-members", "plain"])
@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("how", ["lf_headers", "content_length", "not_utf8", "invalid_json", "garbage"])
def test_a_bad_record_is_counted_and_the_records_after_it_are_read(tmp_path, how, reader, gz) -> None:
    records = records_2014()
    index = 6 if how in ("not_utf8", "invalid_json") else 3
    uri = write(tmp_path / ("bad.wat.gz" if gz else "bad.wat"), spoil(records, index, how), gz)
    report = ReadReport()
    pairs = [(p.url, p.caption) for p in iter_pairs(uri, reader, report)]
    assert dict(report.bad_records) == {how: 1}
    assert len(report.examples) == 1
    if index == 6:
        assert pairs == []  # the spoiled record held them all
    else:
        assert pairs == PAIRS_2014
    clean = ReadReport()
    list(iter_pairs(write(tmp_path / "clean.wat", records, gz=False), reader, clean))
    expected_records = clean.records + (1 if how == "garbage" else 0)
    assert report.records == expected_records


def test_records_that_cannot_hold_image_links_are_not_parsed(tmp_path) -> None:
    """The IMG@ byte search skips JSON parsing; bad JSON there is not seen (and loses nothing)."""
    uri = write(tmp_path / "bad.wat.gz", spoil(records_2014(), 3, "invalid_json"), gz=True)
    report = ReadReport()
    assert [(p.url, p.caption) for p in iter_pairs(uri, "fastwarc", report)] == PAIRS_2014
    assert dict(report.bad_records) == {}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("gz", [True, False], ids=["gzip-members", "plain"])
def test_a_truncated_final_record_is_reported_after_every_earlier_record(tmp_path, reader, gz) -> None:
    records = records_2014()
    whole = write(tmp_path / "whole", records, gz)
    data = Path(whole).read_bytes()
    uri = str(tmp_path / "cut")
    Path(uri).write_bytes(data[: len(data) - 300])
    items = list(iter_archive(uri, reader))
    assert [type(item).__name__ for item in items] == ["ArchiveRecord"] * 7 + ["BadRecord"]
    assert items[-1].kind == "truncated"
    assert "truncated" in items[-1].reason
    assert [(p.url, p.caption) for p in iter_pairs(uri, reader)] == PAIRS_2014


@pytest.mark.parametrize("reader", READERS)
def test_a_corrupt_gzip_member_costs_only_its_record(tmp_path, reader) -> None:
    members = [gzip.compress(r, mtime=0) for r in records_2014()]
    broken = bytearray(members[3])
    broken[20:40] = b"\x00" * 20  # inside the deflate data
    members[3] = bytes(broken)
    uri = tmp_path / "corrupt.wat.gz"
    uri.write_bytes(b"".join(members))
    report = ReadReport()
    pairs = [(p.url, p.caption) for p in iter_pairs(str(uri), reader, report)]
    assert pairs == PAIRS_2014
    assert dict(report.bad_records) == {"corrupt_gzip": 1}
    assert report.records == 8  # 7 metadata records + the bad one (warcinfo is not counted)


def test_a_file_of_lf_records_is_all_bad_records_not_a_crash(tmp_path) -> None:
    lf = [spoil([r], 0, "lf_headers")[0] for r in records_2014()]
    uri = write(tmp_path / "lf.wat", lf, gz=False)
    items = list(iter_archive(uri))
    assert [(type(i).__name__, i.kind) for i in items] == [("BadRecord", "lf_headers")] * 9


def test_list_valued_headers_of_newer_wats_do_not_disturb_extraction() -> None:
    """CC-MAIN-2024-51 and later store repeated HTTP headers as JSON lists."""
    import json

    from clipcrawl.transforms.wat_pairs import parse_wat_record

    record = records_2014()[6]
    payload = record.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
    document = json.loads(payload)
    headers = document["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["Headers"]
    headers["Set-Cookie"] = ["a=1; Path=/", "b=2; Path=/"]
    headers["Vary"] = ["Accept-Encoding", "User-Agent"]
    pairs = parse_wat_record(json.dumps(document).encode(), PAGE_2014)
    assert [(p.url, p.caption) for p in pairs] == PAIRS_2014


def test_reader_names_are_checked() -> None:
    assert resolve_reader("warcio") == "warcio"
    assert resolve_reader("auto") in READERS
    with pytest.raises(ValueError, match="reader must be one of"):
        resolve_reader("fast")


def test_auto_falls_back_to_warcio_without_fastwarc(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastwarc" else real(name, *a))
    assert resolve_reader("auto") == "warcio"
    with pytest.raises(ValueError, match="fastwarc is not installed"):
        resolve_reader("fastwarc")


@pytest.mark.parametrize("reader", READERS)
def test_a_record_over_the_size_limit_is_reported_and_skipped(tmp_path, reader, monkeypatch) -> None:
    import clipcrawl.io.archive as archive
    import clipcrawl.io.warc_framing as framing

    monkeypatch.setattr(framing, "MAX_RECORD_BYTES", 5000)
    monkeypatch.setattr(archive, "MAX_RECORD_BYTES", 5000)
    uri = write(tmp_path / "big.wat.gz", records_2014(), gz=True)
    report = ReadReport()
    assert list(iter_pairs(uri, reader, report)) == []  # the pairs are in the 5,356-byte record
    assert dict(report.bad_records) == {"too_large": 1}
    assert report.records == 8
