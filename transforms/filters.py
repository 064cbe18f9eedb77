"""LAION-style text and URL rules: one pure function per decision, one thin DoFn."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import apache_beam as beam

from clipcrawl.transforms import metrics
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Bounds from LAION-5B: alt text of 5..2000 characters, URLs up to 2000 characters."""

    min_caption_chars: int = 5
    max_caption_chars: int = 2000
    max_url_chars: int = 2000

    def __post_init__(self) -> None:
        if self.min_caption_chars < 0:
            raise ValueError(f"min_caption_chars must be >= 0, got {self.min_caption_chars}")
        if self.max_caption_chars < max(1, self.min_caption_chars):
            raise ValueError(
                f"max_caption_chars ({self.max_caption_chars}) must be >= 1 and >= "
                f"min_caption_chars ({self.min_caption_chars})"
            )
        if self.max_url_chars < 1:
            raise ValueError(f"max_url_chars must be >= 1, got {self.max_url_chars}")


def caption_problem(caption: str, config: FilterConfig) -> str | None:
    """Why the caption is rejected, or None when it passes."""
    if len(caption) < config.min_caption_chars:
        return f"caption has {len(caption)} characters, fewer than {config.min_caption_chars}"
    if len(caption) > config.max_caption_chars:
        return f"caption has {len(caption)} characters, more than {config.max_caption_chars}"
    return None


def url_problem(url: str, config: FilterConfig) -> str | None:
    """Why the URL is rejected, or None when it passes."""
    if len(url) > config.max_url_chars:
        return f"url has {len(url)} characters, more than {config.max_url_chars}"
    return None


def apply_filters(sample: Sample, config: FilterConfig) -> Sample:
    """The sample unchanged, or rejected with the first rule it breaks."""
    problem = url_problem(sample.url, config)
    if problem:
        return sample.reject(Status.FILTERED_URL, problem)
    problem = caption_problem(sample.caption, config)
    if problem:
        return sample.reject(Status.FILTERED_TEXT, problem)
    return sample


class _FilterFn(beam.DoFn):
    def __init__(self, config: FilterConfig) -> None:
        self._config = config
        self._counters = metrics.StageCounters(metrics.FILTER)

    def process(self, sample: Sample) -> Iterator[Sample]:
        self._counters.total.inc()
        result = apply_filters(sample, self._config)
        if result.pending:
            self._counters.forwarded.inc()
        else:
            self._counters.drop(result.status)
        yield result


class FilterPairs(beam.PTransform):
    """Marks candidates that break a text or URL rule; every candidate stays a row."""

    def __init__(self, config: FilterConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        return samples | "ApplyRules" >> beam.ParDo(_FilterFn(self._config))
