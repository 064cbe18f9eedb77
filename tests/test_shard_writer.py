"""Per-shard files: tar parts + parquet + stats, committed by rename, deterministic names."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tarfile

import pyarrow.parquet as pq
import pytest

from clipcrawl.io.parquet import SCHEMA
from clipcrawl.io.shard_writer import WriterConfig, write_shard
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status


def kept(ordinal: int, shard: int = 3) -> Sample:
    image = f"fake-jpeg-{ordinal}".encode()
    return Sample(
        key=sample_key(shard, ordinal), shard_no=shard, url=f"http://a.com/{ordinal}.jpg",
        caption=f"caption {ordinal}", page_url="http://a.com/", source="in.wat.gz",
        status=Status.SUCCESS.value, image=image, image_format="jpg", width=8, height=8,
        original_width=16, original_height=16, sha256=hashlib.sha256(image).hexdigest(),
        similarity=0.31, http_status=200, final_url=f"http://a.com/{ordinal}.jpg",
        fetch_time=1_700_000_000.5, fetch_seconds=0.01, downloaded_bytes=100,
    )


def rejected(ordinal: int, shard: int = 3) -> Sample:
    base = Sample(sample_key(shard, ordinal), shard, f"http://a.com/{ordinal}.png", "gone", "http://a.com/", "in.wat.gz")
    return base.reject(Status.FAILED_TO_DOWNLOAD, "HTTP 404")


def config(tmp_path, per_part: int = 2) -> WriterConfig:
    return WriterConfig(output_dir=str(tmp_path / "out"), coordinator_url="sqlite://", samples_per_part=per_part)


def test_writes_parts_parquet_and_stats_with_no_temp_files_left(tmp_path) -> None:
    samples = [kept(2), rejected(1), kept(0), kept(4), rejected(3)]
    result = write_shard(config(tmp_path), 3, "in.wat.gz", samples)
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["000003.parquet", "000003_00.tar", "000003_01.tar", "000003_stats.json"]
    table = pq.read_table(out / "000003.parquet")
    assert table.schema.equals(SCHEMA)
    assert table.column("key").to_pylist() == [sample_key(3, i) for i in range(5)]
    assert table.column("status").to_pylist() == ["success", "failed_to_download", "success", "failed_to_download", "success"]
    with tarfile.open(out / "000003_00.tar") as tar:
        names = tar.getnames()
        assert sorted(names) == sorted(f"{sample_key(3, i)}.{ext}" for i in (0, 2) for ext in ("jpg", "txt", "json"))
        assert tar.extractfile(f"{sample_key(3, 0)}.jpg").read() == b"fake-jpeg-0"
        assert tar.extractfile(f"{sample_key(3, 0)}.txt").read() == b"caption 0"
        meta = json.loads(tar.extractfile(f"{sample_key(3, 0)}.json").read())
        assert meta["key"] == sample_key(3, 0) and meta["similarity"] == 0.31 and "image" not in meta
    stats = json.loads((out / "000003_stats.json").read_text())
    assert stats["status_counts"]["success"] == 3 and stats["status_counts"]["failed_to_download"] == 2
    assert stats["candidates"] == 5 and stats["kept"] == 3
    assert result.counts.pairs_kept == 3 and result.counts.pairs_extracted == 5 and result.counts.images_ok == 3


def test_same_samples_give_byte_identical_tars(tmp_path) -> None:
    samples = [kept(0), kept(1)]
    write_shard(config(tmp_path), 3, "in.wat.gz", samples)
    first = (tmp_path / "out" / "000003_00.tar").read_bytes()
    write_shard(config(tmp_path), 3, "in.wat.gz", list(reversed(samples)))
    assert (tmp_path / "out" / "000003_00.tar").read_bytes() == first


def test_rewrite_with_fewer_kept_samples_removes_stale_parts(tmp_path) -> None:
    write_shard(config(tmp_path), 3, "in.wat.gz", [kept(i) for i in range(5)])
    assert len([n for n in os.listdir(tmp_path / "out") if n.endswith(".tar")]) == 3
    write_shard(config(tmp_path), 3, "in.wat.gz", [kept(0), rejected(1)])
    assert sorted(os.listdir(tmp_path / "out")) == ["000003.parquet", "000003_00.tar", "000003_stats.json"]


def test_other_shards_files_are_not_touched(tmp_path) -> None:
    write_shard(config(tmp_path), 4, "other.wat.gz", [kept(0, shard=4)])
    write_shard(config(tmp_path), 3, "in.wat.gz", [])
    assert "000004_00.tar" in os.listdir(tmp_path / "out")


def test_zero_pair_shard_still_gets_parquet_and_stats(tmp_path) -> None:
    result = write_shard(config(tmp_path), 3, "empty.wat.gz", [])
    assert sorted(os.listdir(tmp_path / "out")) == ["000003.parquet", "000003_stats.json"]
    assert pq.read_table(tmp_path / "out" / "000003.parquet").num_rows == 0
    assert result.counts.pairs_extracted == 0


def test_a_row_without_a_final_status_is_a_pipeline_bug(tmp_path) -> None:
    pending = dataclasses.replace(kept(0), status=Status.PENDING.value)
    with pytest.raises(RuntimeError, match="pending"):
        write_shard(config(tmp_path), 3, "in.wat.gz", [pending])
    assert not (tmp_path / "out" / "000003.parquet").exists()


def test_percentile_is_nearest_rank() -> None:
    from clipcrawl.io.shard_stats import percentile

    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0], 0.5) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.9) == 90.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert percentile([5.0], 0.99) == 5.0
