"""The dataset graph's shape: one leaf (runners that evaluate only the last leaf still run all)."""

from __future__ import annotations

import apache_beam as beam

from clipcrawl.pipelines.build_dataset import BuildDataset
from clipcrawl.pipelines.options import resolve_config
from tests.conftest import beam_options


def test_the_shard_writer_is_the_only_leaf(tmp_path) -> None:
    options = beam_options("--input=x.wat.gz", f"--output={tmp_path}", "--clip_model=clipcrawl-tiny")
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | beam.Create([(0, "x.wat.gz")]) | "BuildDataset" >> BuildDataset(resolve_config(options))
    components = pipeline.to_runner_api().components
    consumed, produced = set(), {}
    for transform in components.transforms.values():
        if transform.subtransforms:
            continue
        consumed.update(transform.inputs.values())
        produced.update({pcoll: transform.unique_name for pcoll in transform.outputs.values()})
    leaves = sorted(name for pcoll, name in produced.items() if pcoll not in consumed)
    assert leaves == ["BuildDataset/WriteShards/WriteAndCommit"]
    stages = {t.unique_name.split("/")[1] for t in components.transforms.values() if t.unique_name.count("/") >= 1
              and t.unique_name.startswith("BuildDataset/")}
    assert {"ExtractPairs", "FilterPairs", "Dedup", "DownloadImages", "ScoreWithClip", "WriteShards"} <= stages
    assert any("RunInference" in t.unique_name for t in components.transforms.values())
