"""The ExtractPairs step: read each shard, whatever its kind, and number its candidate pairs.

Four kinds of shard, told apart by name (or ``--input_format``): WAT and WARC files (one
reader for both, ``clipcrawl.io.archive``), URL lists (Parquet/CSV/JSONL with url and caption
columns) and WebDataset tars to re-score. The per-record rules live in pure modules
(``wat_pairs``, ``html_images``, ``pairs``); this module reads, numbers and counts.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.typehints import no_annotations

from clipcrawl.io import faults
from clipcrawl.io.archive import HTML, SKIPPED, WAT_JSON, iter_archive, resolve_reader
from clipcrawl.io.url_lists import is_url_list, iter_url_rows
from clipcrawl.io.warc_framing import BadRecord
from clipcrawl.io.webdataset_input import TarSample, is_webdataset, iter_tar_samples
from clipcrawl.transforms import metrics
from clipcrawl.transforms.html_images import html_image_pairs
from clipcrawl.transforms.pairs import BadRecordError, ExtractStats, Pair
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from clipcrawl.transforms.wat_pairs import may_hold_image_links, wat_record_pairs

_LOG = logging.getLogger(__name__)

SAMPLES = "samples"
SHARD_ERRORS = "shard_errors"
READ_REPORTS = "read_reports"

INPUT_FORMATS = ("auto", "warc", "url_list", "webdataset")
_EXAMPLES_KEPT = 5


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """How shards are read: their kind, the WARC reader, and the columns of URL lists."""

    input_format: str = "auto"
    reader: str = "auto"
    url_column: str | None = None
    caption_column: str | None = None
    page_url_column: str | None = None

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {self.input_format!r}")
        resolve_reader(self.reader)  # a reader that is not installed fails before the job starts


@dataclasses.dataclass
class ReadReport:
    """What reading one shard met beyond its pairs: records looked at (WAT JSON, HTML responses,
    URL-list rows, tar samples, bad records), bad ones by kind, a few reasons."""

    records: int = 0
    bad_records: dict[str, int] = dataclasses.field(default_factory=collections.Counter)
    examples: list[str] = dataclasses.field(default_factory=list)
    non_http_links: int = 0

    def bad(self, kind: str, where: str, reason: str) -> None:
        self.bad_records[kind] += 1
        if len(self.examples) < _EXAMPLES_KEPT:
            self.examples.append(f"{where}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bad_records": dict(sorted(self.bad_records.items())),
            "bad_record_examples": list(self.examples),
            "non_http_links": self.non_http_links,
        }


def input_kind(uri: str, input_format: str = "auto") -> str:
    """``warc``, ``url_list`` or ``webdataset`` for one shard URI."""
    if input_format != "auto":
        return input_format
    if is_url_list(uri):
        return "url_list"
    if is_webdataset(uri):
        return "webdataset"
    return "warc"


def iter_pairs(uri: str, reader: str = "auto", report: ReadReport | None = None) -> Iterator[Pair]:
    """Every image/alt pair of a WAT or WARC file, in file order; bad records go to ``report``."""
    report = report if report is not None else ReadReport()
    for record in iter_archive(uri, reader, wat_filter=may_hold_image_links):
        report.records += 1
        if record is SKIPPED:
            continue
        if isinstance(record, BadRecord):
            report.bad(record.kind, record.record_id or f"record at offset {record.offset}", record.reason)
            continue
        try:
            pairs, stats = _record_pairs(record.kind, record.payload, record.target_uri, record.content_type)
        except BadRecordError as error:
            report.bad(error.kind, record.record_id or record.target_uri, str(error))
            continue
        report.non_http_links += stats.non_http_links
        yield from pairs


def _record_pairs(kind: str, payload: bytes, page_url: str, content_type: str) -> tuple[list[Pair], ExtractStats]:
    if kind == WAT_JSON:
        return wat_record_pairs(payload, page_url)
    if kind == HTML:
        return html_image_pairs(payload, page_url, content_type)
    raise ValueError(f"unknown record kind {kind!r}")


def iter_candidates(shard_no: int, uri: str, config: ExtractConfig, report: ReadReport) -> Iterator[Sample]:
    """Pending samples of one shard keyed ``{shard:06d}{ordinal:07d}`` in read order."""
    kind = input_kind(uri, config.input_format)
    if kind == "url_list":
        rows = iter_url_rows(uri, config.url_column, config.caption_column, config.page_url_column)
        made = (_url_row_sample(row.url, row.caption, row.page_url) for row in rows)
    elif kind == "webdataset":
        made = (_tar_sample(item) for item in iter_tar_samples(uri))
    else:
        made = (Sample(key="", shard_no=0, url=p.url, caption=p.caption, page_url=p.page_url, source="")
                for p in iter_pairs(uri, config.reader, report))
    for ordinal, sample in enumerate(made):
        if kind != "warc":
            report.records += 1
        yield dataclasses.replace(sample, key=sample_key(shard_no, ordinal), shard_no=shard_no, source=uri)


def _url_row_sample(url: str, caption: str, page_url: str | None) -> Sample:
    return Sample(key="", shard_no=0, url=url.strip(), caption=caption.strip(), page_url=page_url, source="")


def _tar_sample(item: TarSample) -> Sample:
    """A re-score candidate: the stored image goes straight to scoring, no download."""
    meta = item.metadata
    sample = Sample(
        key="",
        shard_no=0,
        url=str(meta.get("url") or ""),
        caption=(item.caption or "").strip(),
        page_url=meta.get("page_url") if isinstance(meta.get("page_url"), str) else None,
        source="",
        source_key=item.key,
        original_width=_int_or_none(meta.get("original_width")),
        original_height=_int_or_none(meta.get("original_height")),
    )
    if item.image is None:
        return sample.reject(Status.FAILED_TO_DECODE, item.problem or "the tar sample has no image")
    return dataclasses.replace(
        sample,
        image=item.image,
        image_format=item.image_format,
        width=_int_or_none(meta.get("width")),
        height=_int_or_none(meta.get("height")),
        sha256=hashlib.sha256(item.image).hexdigest(),
        downloaded_bytes=len(item.image),
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _ExtractShardFn(beam.DoFn):
    """Reads one shard and numbers its candidates (one shard per call: keys stay dense).

    A shard that cannot be read at all (missing file, unreadable tar or URL list) is not an
    exception for the job: ``(shard_no, message)`` goes to ``SHARD_ERRORS`` and the writer
    records the shard as failed, while the other shards finish. Bad records inside a
    readable WAT/WARC are counted in the shard's ``READ_REPORTS`` entry and skipped.
    """

    def __init__(self, config: ExtractConfig) -> None:
        self._config = config
        self._read = metrics.StageCounters(metrics.READ)
        self._extract = metrics.StageCounters(metrics.EXTRACT)

    def process(self, shard: tuple[int, str]) -> Iterator[Any]:
        shard_no, uri = shard
        report = ReadReport()
        faults.point("extract.shard_start")
        try:
            for sample in iter_candidates(shard_no, uri, self._config, report):
                self._extract.total.inc()  # every candidate goes on: extraction drops none
                self._extract.forwarded.inc()
                faults.point("extract.record")  # cheap when unarmed; hit n = after n-1 records
                yield sample
        except Exception as error:  # noqa: BLE001 - any read failure fails this shard only
            message = f"cannot read {uri}: {type(error).__name__}: {error}"
            _LOG.error("shard %06d: %s", shard_no, message)
            yield beam.pvalue.TaggedOutput(SHARD_ERRORS, (shard_no, message))
        self._count(report)
        yield beam.pvalue.TaggedOutput(READ_REPORTS, (shard_no, report.to_dict()))

    def _count(self, report: ReadReport) -> None:
        bad = sum(report.bad_records.values())
        self._read.total.inc(report.records)
        self._read.forwarded.inc(report.records - bad)
        self._read.dropped.inc(bad)
        self._read.counter(metrics.dropped_name(metrics.BAD_RECORDS)).inc(bad)
        for kind, count in report.bad_records.items():
            self._read.counter(metrics.dropped_name(kind)).inc(count)
        self._extract.counter(metrics.NON_HTTP_LINKS).inc(report.non_http_links)
        for example in report.examples:
            _LOG.warning("bad record: %s", example)


class ExtractPairs(beam.PTransform):
    """``(shard_no, uri)`` shards -> pending ``Sample`` candidates, one per image link with alt.

    Returns a ``DoOutputsTuple``: the main output is the samples, ``SHARD_ERRORS`` holds
    ``(shard_no, message)`` for shards that could not be read, ``READ_REPORTS`` one
    ``(shard_no, report dict)`` per shard for its stats file.
    """

    def __init__(self, config: ExtractConfig | None = None) -> None:
        super().__init__()
        self._config = config or ExtractConfig()

    @no_annotations  # Beam takes only a PCollection/PDone/None output hint and warns about this one
    def expand(self, shards: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            shards
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadAndExtract" >> beam.ParDo(_ExtractShardFn(self._config)).with_outputs(
                SHARD_ERRORS, READ_REPORTS, main=SAMPLES
            )
        )
