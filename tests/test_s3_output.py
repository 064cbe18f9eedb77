"""``s3://`` output through fsspec against a real S3 endpoint (moto_server on loopback).

S3 has no rename (s3fs's ``mv`` is copy + delete), so the writer's commit is ordered instead:
the old parquet goes first, the parquet comes last, temporary objects of a killed attempt are
removed by the next one. These tests read everything back through s3fs, as a user would.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile

import fsspec
import pyarrow.parquet as pq
import pytest

from clipcrawl.io.shard_writer import WriterConfig, write_shard
from clipcrawl.pipelines import build_dataset
from clipcrawl.pipelines.demo import make_demo_inputs
from clipcrawl.pipelines.image_server import ImageServer
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from tests.s3_server import s3_endpoint


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch):
    with s3_endpoint(monkeypatch) as root:
        yield root


def s3() -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3", skip_instance_cache=True)


def kept(ordinal: int, shard: int = 3) -> Sample:
    image = f"fake-jpeg-{ordinal}".encode()
    return Sample(
        key=sample_key(shard, ordinal), shard_no=shard, url=f"http://a.com/{ordinal}.jpg", caption=f"caption {ordinal}",
        page_url="http://a.com/", source="in.wat.gz", status=Status.SUCCESS.value, image=image, image_format="jpg",
        width=8, height=8, original_width=16, original_height=16, sha256=hashlib.sha256(image).hexdigest(),
        similarity=0.31,
    )


def names(prefix: str) -> list[str]:
    return sorted(posixpath.basename(path) for path in s3().find(prefix))


def test_commit_order_lets_a_reader_tell_complete_from_incomplete(bucket, monkeypatch) -> None:
    config = WriterConfig(output_dir=f"{bucket}/out", coordinator_url="sqlite://", samples_per_part=2)
    write_shard(config, 3, "in.wat.gz", [kept(i) for i in range(5)])  # parts 00, 01, 02
    assert names(f"{bucket}/out") == ["000003.parquet", "000003_00.tar", "000003_01.tar", "000003_02.tar",
                                      "000003_stats.json"]

    # Record what the real s3fs instance is asked to do during a rewrite that keeps fewer samples.
    fs = fsspec.core.url_to_fs(config.output_dir)[0]
    steps: list[str] = []
    for method in ("mv", "rm"):
        real = getattr(fs, method)

        def spy(*args, _real=real, _method=method, **kwargs):
            target = args[1] if _method == "mv" else args[0]
            steps.append(f"{_method} {posixpath.basename(target)}")
            return _real(*args, **kwargs)

        monkeypatch.setattr(fs, method, spy)
    write_shard(config, 3, "in.wat.gz", [kept(0), kept(1), kept(2)])  # parts 00, 01
    commits = [step for step in steps if not step.startswith("rm .")]
    assert commits[0] == "rm 000003.parquet"  # the shard reads as incomplete while it changes
    assert commits[-1] == "mv 000003.parquet"  # ... until its parquet lands, last
    assert commits.index("rm 000003_02.tar") < commits.index("mv 000003.parquet")
    assert {"mv 000003_00.tar", "mv 000003_01.tar", "mv 000003_stats.json"} <= set(commits)
    assert names(f"{bucket}/out") == ["000003.parquet", "000003_00.tar", "000003_01.tar", "000003_stats.json"]
    with s3().open(f"{bucket}/out/000003.parquet", "rb") as handle:
        assert pq.read_table(handle).column("key").to_pylist() == [sample_key(3, i) for i in range(3)]


def test_a_rerun_removes_what_a_killed_attempt_left(bucket) -> None:
    fs = s3()
    left = {
        ".000003_00.tar.0123456789ab.tmp": True,  # this shard's: removed
        ".000003.parquet.0123456789ab.tmp": True,
        ".000003_stats.json.ba9876543210.tmp": True,
        ".000030_00.tar.0123456789ab.tmp": False,  # shard 30's, maybe being written now: kept
        ".0000031_00.tar.0123456789ab.tmp": False,  # shard 31 (7 digits wide): kept
        "000003_notes.txt": False,  # not a temporary name: kept
    }
    for name in left:
        fs.pipe(f"{bucket}/out/{name}", b"partial")
    write_shard(WriterConfig(output_dir=f"{bucket}/out", coordinator_url="sqlite://"), 3, "in.wat.gz", [kept(0)])
    remaining = set(names(f"{bucket}/out"))
    assert remaining == {name for name, removed in left.items() if not removed} | {
        "000003.parquet", "000003_00.tar", "000003_stats.json"}


def test_pipeline_reads_and_writes_s3(bucket, tmp_path) -> None:
    fs = s3()
    with ImageServer({}) as server:
        inputs = make_demo_inputs(server, str(tmp_path / "inputs"))
        fs.put([str(path) for path in inputs.wat_paths], f"{bucket}/in/")
        summary = build_dataset.run([
            f"--input={bucket}/in/*.warc.wat.gz",
            f"--output={bucket}/out",
            f"--coordinator=sqlite:///{tmp_path}/ledger.sqlite",
            "--clip_model=clipcrawl-tiny", "--clip_pretrained=", "--allow_private_addresses",
            "--image_size=64", "--samples_per_part=5", "--per_host_rate=0", "--nickname=s3",
            "--direct_running_mode=in_memory",
        ])
    assert summary.ledger["shards"] == {"pending": 0, "running": 0, "done": 3, "failed": 0}
    assert summary.ledger["pairs_kept"] > 0

    everything = names(bucket)
    assert not [name for name in everything if name.endswith(".tmp")], everything
    out = f"{bucket}/out"
    rows, kept_keys = [], set()
    for shard in range(3):
        with fs.open(f"{out}/{shard:06d}.parquet", "rb") as handle:
            table = pq.read_table(handle)
        rows += table.to_pylist()
        stats = json.loads(fs.cat(f"{out}/{shard:06d}_stats.json"))
        assert stats["candidates"] == table.num_rows
        kept_keys |= {row["key"] for row in table.to_pylist() if row["status"] == "success"}
    assert len(rows) == summary.ledger["pairs_extracted"] == len(inputs.links)
    assert len(kept_keys) == summary.ledger["pairs_kept"]
    with_images = [path for path in inputs.wat_paths if "no-images" not in path]
    assert {row["source"] for row in rows} == {f"{bucket}/in/{posixpath.basename(path)}" for path in with_images}

    tar_keys = set()
    for path in fs.glob(f"{out}/*.tar"):
        with tarfile.open(fileobj=io.BytesIO(fs.cat(path))) as tar:
            members = tar.getnames()
        tar_keys |= {member.split(".")[0] for member in members}
        assert len(members) % 3 == 0  # image, caption, metadata per sample
    assert tar_keys == kept_keys
