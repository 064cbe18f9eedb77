"""LAION-style text and URL rules: one pure function per decision, one thin DoFn.

The same step annotates each candidate with its caption's language (a column, not a rule).
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterator
from urllib.parse import urlsplit

import apache_beam as beam

from clipcrawl.transforms import metrics
from clipcrawl.transforms.language import detect_language
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Bounds from LAION-5B: alt text of 5..2000 characters, URLs up to 2000, no svg/gif images."""

    min_caption_chars: int = 5
    max_caption_chars: int = 2000
    max_url_chars: int = 2000
    exclude_extensions: tuple[str, ...] = ("svg", "gif")
    detect_language: bool = True

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
        cleaned = tuple(ext.strip().lower().lstrip(".") for ext in self.exclude_extensions if ext.strip())
        if any(not ext.isalnum() for ext in cleaned):
            raise ValueError(f"exclude_extensions must be plain extensions like svg,gif, got {self.exclude_extensions}")
        object.__setattr__(self, "exclude_extensions", cleaned)


def caption_problem(caption: str, config: FilterConfig) -> str | None:
    """Why the caption is rejected, or None when it passes."""
    if len(caption) < config.min_caption_chars:
        return f"caption has {len(caption)} characters, fewer than {config.min_caption_chars}"
    if len(caption) > config.max_caption_chars:
        return f"caption has {len(caption)} characters, more than {config.max_caption_chars}"
    return None


def url_problem(url: str, config: FilterConfig) -> str | None:
    """Why the URL is rejected, or None when it passes."""
    if not url:
        return "the url is empty"
    if len(url) > config.max_url_chars:
        return f"url has {len(url)} characters, more than {config.max_url_chars}"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:
        return f"url cannot be parsed: {error}"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return "not an absolute http(s) url"
    extension = image_extension(parts.path)
    if extension in config.exclude_extensions:
        return f"image extension .{extension} is excluded (--exclude_extensions)"
    return None


def image_extension(path: str) -> str:
    """Lower-case extension of the URL path's last segment ('' when there is none)."""
    return posixpath.splitext(posixpath.basename(path))[1].lstrip(".").lower()


def with_language(sample: Sample) -> Sample:
    language, score = detect_language(sample.caption)
    return dataclasses.replace(sample, language=language, language_score=score)


def apply_filters(sample: Sample, config: FilterConfig) -> Sample:
    """The sample unchanged, or rejected with the first rule it breaks.

    URL rules guard the download, so a re-scored sample that brings its image skips them.
    """
    if not sample.pending:
        return sample
    problem = url_problem(sample.url, config) if sample.image is None else None
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
        if self._config.detect_language:
            sample = with_language(sample)
        if not sample.pending:  # ended before this step (an unreadable re-score sample)
            yield sample
            return
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
