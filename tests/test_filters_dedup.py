"""Caption/URL rules, language, and cross-shard dedup: pure functions and their transforms."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from clipcrawl.transforms import metrics
from clipcrawl.transforms.dedup import Dedup, DedupConfig, dedup_key, mark_against
from clipcrawl.transforms.filters import FilterConfig, FilterPairs, apply_filters, image_extension
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
        ("a red circle", "http://a.com/logo.svg", Status.FILTERED_URL),
        ("a red circle", "http://a.com/anim.GIF?v=2", Status.FILTERED_URL),
        ("a red circle", "http://a.com/gif/photo.jpg", Status.PENDING),  # only the last segment counts
        ("a red circle", "http://a.com/svg", Status.PENDING),  # no extension
        ("a red circle", "", Status.FILTERED_URL),  # a URL-list row with no url
        ("a red circle", "ftp://a.com/x.jpg", Status.FILTERED_URL),
        ("a red circle", "x.jpg", Status.FILTERED_URL),  # relative: a URL list must hold absolute URLs
        ("a red circle", "http://[::1/x.jpg", Status.FILTERED_URL),  # unparseable
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


def test_rejection_reasons_name_the_rule() -> None:
    assert apply_filters(sample(0, "http://a.com/a.svg"), FilterConfig()).error_message == (
        "image extension .svg is excluded (--exclude_extensions)"
    )
    assert apply_filters(sample(0, ""), FilterConfig()).error_message == "the url is empty"
    assert apply_filters(sample(0, "http://a.com/a.svg"), FilterConfig(exclude_extensions=())).pending
    assert apply_filters(sample(0, "http://a.com/a.PNG"), FilterConfig(exclude_extensions=(".png",))).status == (
        Status.FILTERED_URL
    )
    with pytest.raises(ValueError, match="exclude_extensions"):
        FilterConfig(exclude_extensions=("s/g",))
    assert image_extension("/a/b.tar.gz") == "gz"


def test_a_sample_that_brings_its_image_skips_url_rules_but_not_caption_rules() -> None:
    rescored = dataclasses.replace(sample(0, url=""), image=b"jpeg bytes", image_format="jpg")
    assert apply_filters(rescored, FilterConfig()).pending
    assert apply_filters(dataclasses.replace(rescored, caption="abc"), FilterConfig()).status == Status.FILTERED_TEXT


def test_settled_rows_are_not_filtered_again() -> None:
    settled = sample(0, url="").reject(Status.FAILED_TO_DECODE, "no image")
    assert apply_filters(settled, FilterConfig()) == settled


def test_mark_against_names_the_winner() -> None:
    winner = sample_key(1, 2)
    assert mark_against(winner, sample(2), DedupConfig()).pending
    loser = mark_against(winner, sample(5), DedupConfig())
    assert (loser.status, loser.error_message) == ("duplicate", f"same url and caption as {winner}")
    assert mark_against(winner, sample(5), DedupConfig(key="url")).error_message == f"same url as {winner}"


def test_dedup_key_by_option() -> None:
    a, b = sample(0, shard=1), sample(3, shard=2, caption="other words")
    assert dedup_key(a, DedupConfig()) != dedup_key(b, DedupConfig())
    assert dedup_key(a, DedupConfig(key="url")) == dedup_key(b, DedupConfig(key="url"))
    assert dedup_key(a, DedupConfig(key="url", scope="shard")) != dedup_key(b, DedupConfig(key="url", scope="shard"))
    no_url = [sample(0, url=""), sample(1, url="")]  # re-scored tar samples without a url stay apart
    assert dedup_key(no_url[0], DedupConfig(key="url")) != dedup_key(no_url[1], DedupConfig(key="url"))
    with pytest.raises(ValueError, match="dedup key"):
        DedupConfig(key="sha256")
    with pytest.raises(ValueError, match="dedup scope"):
        DedupConfig(scope="world")


ROWS = [
    sample(0),
    sample(1),  # duplicate of 0
    sample(2, caption="another caption"),  # same url, other caption
    sample(3, caption="tiny"),  # filtered
    sample(4, caption="tiny"),  # filtered too: rejected rows are not deduplicated
    sample(0, shard=2),  # same pair in another shard
    sample(1, shard=0),  # ... and in an earlier shard: this one wins
]


def _run_dedup(config: DedupConfig, expected: list[tuple[str, str, str | None]]) -> dict[str, int]:
    """Runs filter + dedup on ROWS, asserts the (key, status, message) rows, returns dedup counters."""
    pipeline = TestPipeline(options=beam_options())
    result_rows = (
        pipeline
        | beam.Create(ROWS)
        | FilterPairs(FilterConfig(detect_language=False))
        | Dedup(config)
        | beam.Map(lambda s: (s.key, s.status, s.error_message if s.status == "duplicate" else None))
    )
    assert_that(result_rows, equal_to(expected))
    result = pipeline.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.namespace(metrics.DEDUP)))
    return {c.key.metric.name: c.committed for c in query["counters"]}


def _expected(duplicates: dict[str, str], message: str = "url and caption") -> list[tuple[str, str, str | None]]:
    """Every row of ROWS with its status: filtered ones, the given duplicates (key -> winner), the rest pending."""
    rows = []
    for row in ROWS:
        if row.caption == "tiny":
            rows.append((row.key, "filtered_text", None))
        elif row.key in duplicates:
            rows.append((row.key, "duplicate", f"same {message} as {duplicates[row.key]}"))
        else:
            rows.append((row.key, "pending", None))
    return rows


def test_dedup_across_shards_keeps_the_earliest_and_every_row() -> None:
    winner = sample_key(0, 1)
    losers = {sample_key(1, 0): winner, sample_key(1, 1): winner, sample_key(2, 0): winner}
    counts = _run_dedup(DedupConfig(), _expected(losers))
    assert counts[metrics.TOTAL] == 5
    assert counts[metrics.dropped_name("duplicate")] == 3


def test_dedup_by_url_only() -> None:
    winner = sample_key(0, 1)
    losers = {key: winner for key in (sample_key(1, 0), sample_key(1, 1), sample_key(1, 2), sample_key(2, 0))}
    _run_dedup(DedupConfig(key="url"), _expected(losers, "url"))


def test_dedup_within_shard_only_and_off() -> None:
    _run_dedup(DedupConfig(scope="shard"), _expected({sample_key(1, 1): sample_key(1, 0)}))
    _run_dedup(DedupConfig(key="none"), _expected({}))


def test_sample_key_bounds() -> None:
    assert sample_key(12, 345) == "0000120000345"
    with pytest.raises(ValueError, match="candidate pairs"):
        sample_key(0, 10**7)
    with pytest.raises(ValueError, match="shard_no"):
        sample_key(10**6, 0)
