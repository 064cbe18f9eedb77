"""The whole pipeline on the DirectRunner's engine against a loopback image server.

The tiny CLIP model decides keep/drop on its own: the test only knows which captions were
written to match their picture. Run in one process and with two worker processes.
"""

from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq
import pytest
import webdataset

from clipcrawl.io.coordinator import Coordinator
from clipcrawl.pipelines import build_dataset
from clipcrawl.pipelines.demo import DemoInputs, make_demo_inputs
from clipcrawl.pipelines.image_server import ImageServer
from tests.conftest import output_fingerprint

RUNNERS = {
    "in_process": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "two_processes": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def pipeline_args(inputs_dir: str, output: str, runner: str) -> list[str]:
    return [
        f"--input={inputs_dir}/*.warc.wat.gz",
        f"--output={output}",
        "--clip_model=clipcrawl-tiny",
        "--clip_pretrained=",
        "--allow_private_addresses",
        "--image_size=64",
        "--samples_per_part=5",
        "--nickname=e2e",
        *RUNNERS[runner],
    ]


def read_parquet_rows(output: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(output, "*.parquet"))):
        rows += pq.read_table(path).to_pylist()
    return rows


@pytest.fixture(scope="module")
def server():
    with ImageServer({}) as image_server:
        yield image_server


@pytest.fixture(scope="module")
def demo_inputs(server, tmp_path_factory) -> tuple[str, DemoInputs]:
    inputs_dir = str(tmp_path_factory.mktemp("inputs"))
    return inputs_dir, make_demo_inputs(server, inputs_dir)


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_pipeline_end_to_end(runner, demo_inputs, tmp_path) -> None:
    inputs_dir, inputs = demo_inputs
    output = str(tmp_path / "dataset")
    summary = build_dataset.run(pipeline_args(inputs_dir, output, runner))

    # Every shard, including the WAT with no images, is done.
    assert len(summary.shards_processed) == 3
    assert summary.ledger["shards"] == {"pending": 0, "running": 0, "done": 3, "failed": 0}

    rows = read_parquet_rows(output)
    by_pair = {(row["url"], row["caption"]): row for row in rows if row["status"] != "duplicate"}
    # One row per candidate: every written link with alt text, the duplicate included.
    assert len(rows) == len(inputs.links)
    assert len({row["key"] for row in rows}) == len(rows)
    for link in inputs.links:
        if link.expect == "duplicate":
            continue
        row = by_pair[(link.url, link.caption)]
        expected_status = {"match": "success", "mismatch": "below_threshold"}.get(link.expect, link.expect)
        assert row["status"] == expected_status, (link, row["similarity"], row["error_message"])
        if row["status"] != "success":
            assert row["error_message"], row
    duplicates = [row for row in rows if row["status"] == "duplicate"]
    assert len(duplicates) == sum(1 for link in inputs.links if link.expect == "duplicate")

    # Tar and parquet agree on keys; the tar reads back with the webdataset package.
    success_keys = {row["key"] for row in rows if row["status"] == "success"}
    tars = sorted(glob.glob(os.path.join(output, "*.tar")))
    dataset = webdataset.WebDataset(tars, shardshuffle=False).decode("pil")
    tar_samples = list(dataset)
    assert {sample["__key__"] for sample in tar_samples} == success_keys
    assert len(tar_samples) == len(success_keys)
    for sample in tar_samples:
        image = next(sample[ext] for ext in ("jpg", "png", "webp") if ext in sample)
        assert max(image.size) == 64  # resized by the default border mode
        assert sample["txt"] == by_pair[(sample["json"]["url"], sample["txt"])]["caption"]
        assert sample["json"]["similarity"] >= 0.28

    # Per-shard files are named from the coordinator's shard numbers.
    shard_rows = Coordinator(f"sqlite:///{output}/clipcrawl.sqlite").shards()
    for shard in shard_rows:
        prefix = f"{shard['shard_no']:06d}"
        assert os.path.exists(os.path.join(output, f"{prefix}.parquet"))
        stats = json.loads(open(os.path.join(output, f"{prefix}_stats.json")).read())
        assert stats["candidates"] == shard["pairs_extracted"]
        assert stats["kept"] == shard["pairs_kept"]
    empty = [shard for shard in shard_rows if shard["uri"].endswith("demo-no-images.warc.wat.gz")]
    assert empty[0]["status"] == "done" and empty[0]["pairs_extracted"] == 0
    assert not glob.glob(os.path.join(output, ".*.tmp")) and not glob.glob(os.path.join(output, "*.tmp"))


def test_rerun_does_nothing_and_force_redoes(demo_inputs, tmp_path) -> None:
    inputs_dir, _ = demo_inputs
    output = str(tmp_path / "dataset")
    args = pipeline_args(inputs_dir, output, "in_process")
    first = build_dataset.run(args)
    before = output_fingerprint(output)
    decisions = {row["key"]: (row["url"], row["status"]) for row in read_parquet_rows(output)}
    assert first.shards_processed and before

    again = build_dataset.run(args)
    assert again.shards_processed == ()
    assert output_fingerprint(output) == before

    forced = build_dataset.run(args + ["--force"])
    assert forced.shards_processed == first.shards_processed
    after = output_fingerprint(output)
    assert after.keys() == before.keys()
    assert all(after[name][0] != before[name][0] for name in after)  # every file rewritten
    # Same inputs, same keys and decisions: redoing a shard overwrites, never duplicates.
    assert {row["key"]: (row["url"], row["status"]) for row in read_parquet_rows(output)} == decisions
