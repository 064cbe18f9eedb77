"""The benchmark's WAT generator makes valid, deterministic WATs whose pairs it knows, and the
extraction benchmark runs end to end in its smoke mode (timings are printed, never asserted)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pathlib
import subprocess
import sys
import zlib
from types import ModuleType

import pytest

from tests.conftest import wat_records as iter_wat_metadata
from clipcrawl.transforms.wat_pairs import parse_wat_record

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
RECORDS = 601  # warcinfo metadata + 200 captures of request, response, metadata


def _load_make_wat() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_wat", BENCH / "make_wat.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_wat"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


make_wat = _load_make_wat()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, object]:
    path = tmp_path_factory.mktemp("bench") / "small.warc.wat.gz"
    return path, make_wat.write_wat(path, RECORDS, seed=11)


def test_generated_wat_has_the_requested_metadata_records(generated) -> None:
    path, summary = generated
    records = list(iter_wat_metadata(str(path)))
    assert len(records) == RECORDS == summary.records
    assert summary.captures == (RECORDS - 1) // 3
    assert records[0].target_uri.endswith(".warc.gz")  # the source WARC's warcinfo
    assert all(record.target_uri.startswith("http") for record in records[1:])


def test_every_record_is_its_own_gzip_member(generated) -> None:
    path, summary = generated
    data = path.read_bytes()
    members = 0
    while data:
        inflater = zlib.decompressobj(31)
        inflater.decompress(data)
        data = inflater.unused_data
        members += 1
    assert members == RECORDS + 1  # the warcinfo record too
    assert len(gzip.decompress(path.read_bytes())) == summary.uncompressed_bytes


def test_generated_wat_is_shaped_like_common_crawl(generated) -> None:
    _, summary = generated
    assert 0.3 <= summary.pages_with_images / summary.responses <= 0.6
    assert summary.image_links / summary.pages_with_images >= 3
    assert summary.blank_alt_links > 0 and len(summary.pairs) > 0
    # Response records carry most of the bytes: several KB of JSON each.
    assert summary.uncompressed_bytes / summary.captures > 5_000


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: pathlib.Path) -> None:
    digests = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        path = tmp_path / f"{name}.warc.wat.gz"
        make_wat.write_wat(path, 91, seed)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_clipcrawl_finds_exactly_the_generated_pairs(generated) -> None:
    path, summary = generated
    found = [
        (pair.url, pair.caption, pair.page_url)
        for record in iter_wat_metadata(str(path))
        for pair in parse_wat_record(record.payload, record.target_uri)
    ]
    assert found == [(pair.url, pair.caption, pair.page_url) for pair in summary.pairs]


def test_cli_writes_the_wat_and_its_truth(tmp_path: pathlib.Path) -> None:
    out, truth = tmp_path / "cli.warc.wat.gz", tmp_path / "truth.tsv"
    result = subprocess.run(
        [sys.executable, str(BENCH / "make_wat.py"), str(out), "--records", "31", "--seed", "2", "--truth", str(truth)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert "31 metadata records" in result.stdout
    expected = make_wat.write_wat(tmp_path / "again.warc.wat.gz", 31, 2)
    assert out.read_bytes() == (tmp_path / "again.warc.wat.gz").read_bytes()
    assert len(truth.read_text(encoding="utf-8").splitlines()) == len(expected.pairs)


def test_extract_bench_smoke_prints_the_clipcrawl_row() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "extract.py"), "--smoke"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    clipcrawl_rows = [line for line in result.stdout.splitlines() if line.startswith("clipcrawl ")]
    assert any("= expected" in line for line in clipcrawl_rows), result.stdout
    # Every clipcrawl row gives exactly the generated pairs, or names a reader that is not installed.
    assert all("= expected" in line or "not installed" in line for line in clipcrawl_rows), result.stdout
    assert "zcat" in result.stdout and "cc2dataset" in result.stdout
