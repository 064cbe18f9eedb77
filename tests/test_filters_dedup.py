"""Caption/URL rules and within-shard dedup: pure functions and their transforms."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from clipcrawl.transforms import metrics
from clipcrawl.transforms.dedup import DedupWithinShard, mark_duplicates
from clipcrawl.transforms.filters import FilterConfig, FilterPairs, apply_filters
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from tests.conftest import beam_options


def sample(ordinal: int, url: str = "http://a.com/x.jpg", caption: str = "a red circle", shard: int = 1) -> Sample:
    return Sample(sample_key(shard, ordinal), shard, url, caption, "http://a.com/", "src.wat.gz")


@pytest.mark.parametrize(
    ("caption", "url", "status"),
    [
        ("a red circle", "http://a.com/x.jpg", Status.PENDING),
        ("abcde", "http://a.com/x.jpg", Status.PENDING),  # exactly the minimum
        ("abcd", "http://a.com/x.jpg", Status.FILTERED_TEXT),
        ("x" * 2001, "http://a.com/x.jpg", Status.FILTERED_TEXT),
        ("a red circle", "http://a.com/" + "x" * 2000, Status.FILTERED_URL),
    ],
)
def test_apply_filters_laion_defaults(caption, url, status) -> None:
    result = apply_filters(sample(0, url, caption), FilterConfig())
    assert result.status == status
    assert (result.error_message is None) == (status == Status.PENDING)


def test_filter_bounds_are_configurable_and_validated() -> None:
    assert apply_filters(sample(0, caption="abc"), FilterConfig(min_caption_chars=3)).pending
    with pytest.raises(ValueError, match="max_caption_chars"):
        FilterConfig(min_caption_chars=10, max_caption_chars=5)
    with pytest.raises(ValueError, match="min_caption_chars"):
        FilterConfig(min_caption_chars=-1)


def test_mark_duplicates_keeps_the_lowest_key_whatever_the_arrival_order() -> None:
    group = [sample(5), sample(2), sample(9)]
    marked = mark_duplicates(group)
    assert [(s.key, s.status) for s in marked] == [
        (sample_key(1, 2), "pending"),
        (sample_key(1, 5), "duplicate"),
        (sample_key(1, 9), "duplicate"),
    ]
    assert marked[1].error_message == f"same url and caption as {sample_key(1, 2)}"


def test_filter_and_dedup_transforms_keep_every_candidate_as_a_row() -> None:
    rows = [
        sample(0),
        sample(1),  # duplicate of 0
        sample(2, caption="another caption"),  # same url, other caption: not a duplicate
        sample(3, caption="tiny"),  # filtered
        sample(4, caption="tiny"),  # filtered too: rejected rows are not deduplicated
        sample(0, shard=2),  # same pair in another shard: not a duplicate within the shard
    ]
    pipeline = TestPipeline(options=beam_options())
    result_rows = (
        pipeline
        | beam.Create(rows)
        | FilterPairs(FilterConfig())
        | DedupWithinShard()
        | beam.Map(lambda s: (s.key, s.status))
    )
    assert_that(
        result_rows,
        equal_to(
            [
                (sample_key(1, 0), "pending"),
                (sample_key(1, 1), "duplicate"),
                (sample_key(1, 2), "pending"),
                (sample_key(1, 3), "filtered_text"),
                (sample_key(1, 4), "filtered_text"),
                (sample_key(2, 0), "pending"),
            ]
        ),
    )
    result = pipeline.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.namespace(metrics.DEDUP)))
    counts = {c.key.metric.name: c.committed for c in query["counters"]}
    assert counts[metrics.TOTAL] == 4
    assert counts[metrics.dropped_name("duplicate")] == 1


def test_sample_key_bounds() -> None:
    assert sample_key(12, 345) == "0000120000345"
    with pytest.raises(ValueError, match="candidate pairs"):
        sample_key(0, 10**7)
    with pytest.raises(ValueError, match="shard_no"):
        sample_key(10**6, 0)
