"""Every stage counts under the fixed names, and the counts add up, on the real pipeline.

The demo's inputs (a loopback image server, generated WATs, the tiny CLIP model) go through
``build_dataset.run`` with an injected ``TestPipeline``; its Beam counters are queried with
``MetricsFilter`` and checked against each other and against the parquet rows written.
"""

from __future__ import annotations

import collections
import glob
from typing import Any

import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline

from clipcrawl.pipelines import build_dataset, demo
from clipcrawl.pipelines.image_server import ImageServer
from clipcrawl.transforms import metrics
from clipcrawl.transforms.status import FINAL_STATUSES, Status
from tests.conftest import beam_options


class RecordingPipeline(TestPipeline):
    """A TestPipeline that keeps its result, so the test can read the run's metrics."""

    result: Any = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.result = super().run(*args, **kwargs)
        return self.result


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, int]], list[dict], Any]:
    """``({stage: {counter: value}}, parquet rows, RunSummary)`` of one pipeline run on the demo's inputs."""
    root = tmp_path_factory.mktemp("metrics")
    pipeline = RecordingPipeline(options=beam_options("--direct_running_mode=in_memory"))
    with ImageServer({}) as server:
        demo.make_demo_inputs(server, str(root / "input"))
        summary = build_dataset.run(demo.demo_args(str(root / "input"), str(root / "dataset")), test_pipeline=pipeline)
    counters = pipeline.result.metrics().query(MetricsFilter())["counters"]
    by_stage: dict[str, dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
    for result in counters:
        namespace = result.key.metric.namespace
        if namespace.startswith(metrics.NAMESPACE + "."):
            by_stage[namespace.removeprefix(metrics.NAMESPACE + ".")][result.key.metric.name] += result.committed
    rows = [row for path in sorted(glob.glob(str(root / "dataset" / "[0-9]*.parquet"))) for row in pq.read_table(path).to_pylist()]
    return {stage: dict(values) for stage, values in by_stage.items()}, rows, summary


def test_every_stage_counts_under_its_fixed_namespace(demo_run) -> None:
    counts, _, _ = demo_run
    assert set(metrics.STAGES) <= set(counts)
    # Anything else is a stage's own sub-namespace: RunInference's counters under clipcrawl.score.inference.
    assert {name.split(".")[0] for name in counts} == set(metrics.STAGES)
    for stage in metrics.STAGES:
        assert counts[stage][metrics.TOTAL] > 0, stage
        assert counts[stage].get(metrics.FORWARDED, 0) + counts[stage].get(metrics.DROPPED, 0) == counts[stage][
            metrics.TOTAL
        ], stage


def test_drops_by_status_add_up_to_each_stages_dropped(demo_run) -> None:
    counts, _, _ = demo_run
    for stage in metrics.STAGES:
        by_status = {
            name: value for name, value in counts[stage].items()
            if name.startswith(metrics.DROPPED + "_") and name != metrics.dropped_name(metrics.BAD_RECORDS)
        }
        assert sum(by_status.values()) == counts[stage].get(metrics.DROPPED, 0), (stage, by_status)


def test_each_stage_forwards_to_the_next(demo_run) -> None:
    counts, rows, _ = demo_run
    order = [metrics.EXTRACT, metrics.FILTER, metrics.DEDUP, metrics.DOWNLOAD, metrics.SCORE]
    for before, after in zip(order, order[1:]):
        assert counts[before][metrics.FORWARDED] == counts[after][metrics.TOTAL], (before, after)
    assert counts[metrics.EXTRACT][metrics.TOTAL] == len(rows)  # every candidate became one row


def test_counts_match_the_parquet_rows(demo_run) -> None:
    counts, rows, summary = demo_run
    statuses = collections.Counter(row["status"] for row in rows)
    assert len(rows) == 32 and statuses[Status.SUCCESS] == 16  # the demo's known outcome
    write = counts[metrics.WRITE]
    assert write[metrics.ROWS_WRITTEN] == len(rows)
    assert write[metrics.SAMPLES_WRITTEN] == statuses[Status.SUCCESS] == counts[metrics.SCORE][metrics.FORWARDED]
    assert write[metrics.TOTAL] == write[metrics.FORWARDED] == len(summary.shards_processed) == 3
    # Every row that did not succeed was dropped by exactly one stage, under its status.
    for status in FINAL_STATUSES - {Status.SUCCESS.value}:
        dropped = sum(counts[stage].get(metrics.dropped_name(status), 0) for stage in metrics.STAGES)
        assert dropped == statuses[status], status
    read = counts[metrics.READ]
    assert read[metrics.FORWARDED] == read[metrics.TOTAL] and read.get(metrics.DROPPED, 0) == 0  # clean WATs


def test_names_are_the_documented_ones() -> None:
    assert metrics.namespace(metrics.DOWNLOAD) == "clipcrawl.download"
    assert (metrics.TOTAL, metrics.FORWARDED, metrics.DROPPED) == ("total", "forwarded", "dropped")
    assert metrics.dropped_name(Status.DUPLICATE) == "dropped_duplicate"
    assert metrics.counter_key(metrics.WRITE, metrics.ROWS_WRITTEN) == "clipcrawl.write/rows_written"
