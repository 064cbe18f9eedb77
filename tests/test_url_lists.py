"""URL-list readers: parquet, CSV and JSON Lines, plain and gzipped, with LAION/DataComp names."""

from __future__ import annotations

import gzip
import json
import pathlib

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipcrawl.io import url_lists
from clipcrawl.io.inputs import InputError
from clipcrawl.io.url_lists import UrlRow, is_url_list, iter_url_rows


def write_parquet(path: pathlib.Path, columns: dict[str, list], **kwargs) -> str:
    pq.write_table(pa.table(columns), path, **kwargs)
    return str(path)


def write_text(path: pathlib.Path, text: str) -> str:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def write_jsonl(path: pathlib.Path, records: list[dict]) -> str:
    return write_text(path, "".join(json.dumps(record) + "\n" for record in records))


LAION = {"URL": ["http://a/1.jpg", "http://a/2.png"], "TEXT": ["a cat", "a dog"], "WIDTH": [10, 20]}
EXPECTED = [UrlRow("http://a/1.jpg", "a cat", None), UrlRow("http://a/2.png", "a dog", None)]


def test_is_url_list() -> None:
    for uri in ("x.parquet", "s3://b/x.csv", "x.CSV.GZ", "x.jsonl", "x.jsonl.gz"):
        assert is_url_list(uri), uri
    for uri in ("x.warc.wat.gz", "x.tar", "x.json", "x.csv.bz2", "parquet"):
        assert not is_url_list(uri), uri


def test_laion_parquet(tmp_path: pathlib.Path) -> None:
    uri = write_parquet(tmp_path / "laion.parquet", LAION)
    assert list(iter_url_rows(uri)) == EXPECTED


def test_datacomp_parquet_with_page_url(tmp_path: pathlib.Path) -> None:
    uri = write_parquet(
        tmp_path / "datacomp.parquet",
        {"uid": ["u1", "u2"], "url": ["http://b/1", "http://b/2"], "text": ["one", "two"], "page_url": ["http://p/", None]},
    )
    assert list(iter_url_rows(uri)) == [UrlRow("http://b/1", "one", "http://p/"), UrlRow("http://b/2", "two", None)]


def test_img2dataset_caption_column_preferred_over_text(tmp_path: pathlib.Path) -> None:
    uri = write_parquet(tmp_path / "x.parquet", {"url": ["u"], "text": ["from text"], "caption": ["from caption"]})
    assert list(iter_url_rows(uri)) == [UrlRow("u", "from caption", None)]


def test_nulls_become_empty_and_numbers_become_text(tmp_path: pathlib.Path) -> None:
    uri = write_parquet(tmp_path / "x.parquet", {"url": ["u1", None, "u3"], "caption": [None, "b", "c"], "PAGE_URL": [1, 2, None]})
    assert list(iter_url_rows(uri)) == [UrlRow("u1", "", "1"), UrlRow("", "b", "2"), UrlRow("u3", "c", None)]
    numeric = write_parquet(tmp_path / "n.parquet", {"url": ["u"], "caption": [1.5]})
    assert list(iter_url_rows(numeric)) == [UrlRow("u", "1.5", None)]


def test_explicit_columns_override_detection(tmp_path: pathlib.Path) -> None:
    uri = write_parquet(
        tmp_path / "custom.parquet",
        {"URL": ["wrong"], "image_link": ["http://c/1"], "alt": ["alt text"], "source_page": ["http://c/"]},
    )
    rows = iter_url_rows(uri, url_column="image_link", caption_column="alt", page_url_column="source_page")
    assert list(rows) == [UrlRow("http://c/1", "alt text", "http://c/")]


def test_missing_column_names_file_columns_and_option(tmp_path: pathlib.Path) -> None:
    uri = write_parquet(tmp_path / "custom.parquet", {"image_link": ["u"], "alt": ["t"]})
    with pytest.raises(InputError) as error:
        list(iter_url_rows(uri))
    message = str(error.value)
    assert uri in message and "['image_link', 'alt']" in message and "--url_column" in message
    with pytest.raises(InputError, match="--caption_column"):
        list(iter_url_rows(uri, url_column="image_link"))
    with pytest.raises(InputError, match="'nope'.*--page_url_column"):
        list(iter_url_rows(uri, url_column="image_link", caption_column="alt", page_url_column="nope"))


def test_empty_parquet_yields_nothing(tmp_path: pathlib.Path) -> None:
    uri = write_parquet(tmp_path / "empty.parquet", {"URL": pa.array([], pa.string()), "TEXT": pa.array([], pa.string())})
    assert list(iter_url_rows(uri)) == []


def test_large_parquet_streams_in_order(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_sizes: list[int] = []
    batch_rows = url_lists._batch_rows
    monkeypatch.setattr(url_lists, "_PARQUET_BATCH_ROWS", 1_024)
    monkeypatch.setattr(url_lists, "_batch_rows", lambda batch, columns: batch_sizes.append(len(batch)) or batch_rows(batch, columns))
    count = 10_000
    uri = write_parquet(
        tmp_path / "big.parquet",
        {"url": [f"http://d/{i}.jpg" for i in range(count)], "text": [f"caption {i}" for i in range(count)]},
        row_group_size=1_000,
    )
    rows = iter_url_rows(uri)
    assert next(rows) == UrlRow("http://d/0.jpg", "caption 0", None)
    rest = list(rows)
    assert len(rest) == count - 1
    assert rest[-1] == UrlRow(f"http://d/{count - 1}.jpg", f"caption {count - 1}", None)
    assert [row.url for row in rest[:3]] == ["http://d/1.jpg", "http://d/2.jpg", "http://d/3.jpg"]
    assert batch_sizes == [1_024] * 9 + [count - 9 * 1_024]


@pytest.mark.parametrize("name", ["list.csv", "list.csv.gz"])
def test_csv_laion_columns(tmp_path: pathlib.Path, name: str) -> None:
    uri = write_text(tmp_path / name, "URL,TEXT,WIDTH\nhttp://a/1.jpg,a cat,10\nhttp://a/2.png,a dog,20\n")
    assert list(iter_url_rows(uri)) == EXPECTED


def test_csv_keeps_text_as_written(tmp_path: pathlib.Path) -> None:
    """Empty cells are "", "NA" stays a caption, digits stay digits, quoted newlines stay."""
    uri = write_text(tmp_path / "x.csv", 'url,caption\nu1,\nu2,NA\n3,007\nu4,"two\nlines, quoted"\n')
    assert list(iter_url_rows(uri)) == [
        UrlRow("u1", "", None),
        UrlRow("u2", "NA", None),
        UrlRow("3", "007", None),
        UrlRow("u4", "two\nlines, quoted", None),
    ]


def test_csv_ignored_column_cannot_break_parsing(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WIDTH looks numeric in the first block and is not later; it is never parsed."""
    monkeypatch.setattr(url_lists, "_CSV_BLOCK_BYTES", 4096)
    lines = [f"http://e/{i},cap {i},{i}" for i in range(50_000)] + ["http://e/last,last,unknown"]
    uri = write_text(tmp_path / "x.csv", "url,text,WIDTH\n" + "\n".join(lines) + "\n")
    rows = list(iter_url_rows(uri))
    assert len(rows) == 50_001
    assert rows[-1] == UrlRow("http://e/last", "last", None)


def test_csv_header_only_and_empty_file_yield_nothing(tmp_path: pathlib.Path) -> None:
    assert list(iter_url_rows(write_text(tmp_path / "h.csv", "URL,TEXT\n"))) == []
    assert list(iter_url_rows(write_text(tmp_path / "e.csv", ""))) == []
    assert list(iter_url_rows(write_text(tmp_path / "e.csv.gz", ""))) == []


def test_csv_malformed_row_names_file_and_row(tmp_path: pathlib.Path) -> None:
    uri = write_text(tmp_path / "bad.csv", "url,text\nu1,a\nu2,b,extra\nu3,c\n")
    with pytest.raises(InputError) as error:
        list(iter_url_rows(uri))
    assert uri in str(error.value) and "Row #3" in str(error.value)


def test_csv_missing_column(tmp_path: pathlib.Path) -> None:
    uri = write_text(tmp_path / "x.csv", "link,alt\nu,t\n")
    with pytest.raises(InputError, match=r"columns found: \['link', 'alt'\].*--url_column"):
        list(iter_url_rows(uri))
    assert list(iter_url_rows(uri, url_column="link", caption_column="alt")) == [UrlRow("u", "t", None)]


@pytest.mark.parametrize("name", ["list.jsonl", "list.jsonl.gz"])
def test_jsonl_datacomp_columns(tmp_path: pathlib.Path, name: str) -> None:
    records = [
        {"url": "http://b/1", "text": None, "page_url": "http://p/1"},
        {"url": 42, "text": "number url"},
        {"text": "no url key", "page_url": None},
        {"url": "http://b/4", "text": "ünïcode"},
    ]
    uri = write_jsonl(tmp_path / name, records)
    assert list(iter_url_rows(uri)) == [
        UrlRow("http://b/1", "", "http://p/1"),
        UrlRow("42", "number url", None),
        UrlRow("", "no url key", None),
        UrlRow("http://b/4", "ünïcode", None),
    ]


def test_jsonl_errors_name_the_line(tmp_path: pathlib.Path) -> None:
    uri = write_text(tmp_path / "bad.jsonl", '{"URL": "u", "TEXT": "t"}\n\n{"URL": "u2", TEXT}\n')
    rows = iter_url_rows(uri)
    assert next(rows) == UrlRow("u", "t", None)
    with pytest.raises(InputError, match=r"bad\.jsonl: line 3 is not valid JSON"):
        next(rows)
    with pytest.raises(InputError, match="line 1 is a JSON list"):
        list(iter_url_rows(write_text(tmp_path / "list.jsonl", '["u", "t"]\n')))
    with pytest.raises(InputError, match=r"columns found: \['src'\]"):
        list(iter_url_rows(write_jsonl(tmp_path / "cols.jsonl", [{"src": "u"}])))


def test_empty_jsonl_yields_nothing(tmp_path: pathlib.Path) -> None:
    assert list(iter_url_rows(write_text(tmp_path / "e.jsonl", "\n"))) == []


def test_unknown_suffix_is_an_input_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InputError, match="not a URL list"):
        list(iter_url_rows(str(tmp_path / "x.tsv")))


def test_reads_through_fsspec_urls() -> None:
    """memory:// stands in for s3:// or gs://: nothing assumes a local path."""
    with fsspec.open("memory://lists/x.csv.gz", "wb", compression="infer") as sink:
        sink.write(b"URL,TEXT\nhttp://a/1.jpg,a cat\n")
    with fsspec.open("memory://lists/x.parquet", "wb") as sink:
        pq.write_table(pa.table({"url": ["http://a/2.jpg"], "caption": ["a dog"]}), sink)
    assert list(iter_url_rows("memory://lists/x.csv.gz")) == [UrlRow("http://a/1.jpg", "a cat", None)]
    assert list(iter_url_rows("memory://lists/x.parquet")) == [UrlRow("http://a/2.jpg", "a dog", None)]
