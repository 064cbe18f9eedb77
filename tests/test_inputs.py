"""Input expansion: paths, globs, fsspec URLs and Common Crawl manifests."""

from __future__ import annotations

import gzip
import shutil

import fsspec
import pytest

from clipcrawl.io.inputs import InputError, expand_inputs, join_base, read_manifest
from tests.conftest import wat_records as iter_wat_metadata
from tests.conftest import WAT_2014_GZ, WAT_WHIRLWIND


def test_globs_and_paths_are_expanded_sorted_and_deduplicated(tmp_path) -> None:
    for name in ("b.wat.gz", "a.wat.gz", "c.txt"):
        shutil.copy(WAT_WHIRLWIND, tmp_path / name)
    uris = expand_inputs([str(tmp_path / "*.wat.gz"), str(tmp_path / "a.wat.gz")])
    assert uris == [str(tmp_path / "a.wat.gz"), str(tmp_path / "b.wat.gz")]


def test_relative_paths_become_absolute(tmp_path, monkeypatch) -> None:
    shutil.copy(WAT_WHIRLWIND, tmp_path / "x.wat.gz")
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["x.wat.gz"]) == [str(tmp_path / "x.wat.gz")]


def test_file_url_is_accepted(tmp_path) -> None:
    shutil.copy(WAT_WHIRLWIND, tmp_path / "x.wat.gz")
    assert expand_inputs([f"file://{tmp_path}/x.wat.gz"]) == [str(tmp_path / "x.wat.gz")]


def test_fsspec_memory_url_is_expanded_and_readable() -> None:
    with fsspec.open("memory://bucket/crawl/one.wat.gz", "wb") as sink:
        sink.write(WAT_2014_GZ.read_bytes())
    uris = expand_inputs(["memory://bucket/crawl/*.wat.gz"])
    assert len(uris) == 1 and uris[0].startswith("memory://") and uris[0].endswith("/bucket/crawl/one.wat.gz")
    assert len(list(iter_wat_metadata(uris[0]))) == 8


@pytest.mark.parametrize("pattern", ["/definitely/not/here.wat.gz", "/definitely/not/*.wat.gz"])
def test_missing_inputs_are_clear_errors(pattern) -> None:
    with pytest.raises(InputError, match="not"):
        expand_inputs([pattern])


def test_a_directory_is_refused_with_a_hint(tmp_path) -> None:
    with pytest.raises(InputError, match="directory"):
        expand_inputs([str(tmp_path)])


def test_manifest_gz_with_base_url(tmp_path) -> None:
    manifest = tmp_path / "wat.paths.gz"
    manifest.write_bytes(gzip.compress(b"crawl-data/CC-MAIN-2024-22/a.warc.wat.gz\n\ncrawl-data/CC-MAIN-2024-22/b.warc.wat.gz\n"))
    assert read_manifest(str(manifest), "s3://commoncrawl/") == [
        "s3://commoncrawl/crawl-data/CC-MAIN-2024-22/a.warc.wat.gz",
        "s3://commoncrawl/crawl-data/CC-MAIN-2024-22/b.warc.wat.gz",
    ]
    assert read_manifest(str(manifest), "/mirror/cc", limit=1) == ["/mirror/cc/crawl-data/CC-MAIN-2024-22/a.warc.wat.gz"]


def test_plain_manifest_and_bad_manifests(tmp_path) -> None:
    plain = tmp_path / "wat.paths"
    plain.write_text("x.wat.gz\n")
    assert read_manifest(str(plain), "https://data.commoncrawl.org") == ["https://data.commoncrawl.org/x.wat.gz"]
    empty = tmp_path / "empty.paths"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="lists no paths"):
        read_manifest(str(empty), "/x")
    with pytest.raises(InputError, match="base"):
        read_manifest(str(plain), "")


def test_join_base() -> None:
    assert join_base("s3://cc/", "/a/b") == "s3://cc/a/b"
    assert join_base("/data", "a/b") == "/data/a/b"
