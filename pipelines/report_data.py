"""What ``clipcrawl report`` shows, gathered from an output directory (local or any fsspec URL).

Every shard's ``_stats.json`` is read; its parquet rows are folded into fixed-bin histograms
and counters as they are read, so memory stays flat however many rows there are. Images for
the sample grid come from a few shards only (report_samples.py).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import posixpath
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from clipcrawl.io.shard_stats import error_kind
from clipcrawl.pipelines.report_samples import GridImage, choose_evenly, kept_grid, rejected_grid
from clipcrawl.transforms.status import Status

_SHARD_FILE = re.compile(r"^(\d{6})(_stats\.json|\.parquet|_(\d{2})\.tar)$")
_THRESHOLD_IN_MESSAGE = re.compile(r"< threshold (-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)$")
_ROW_COLUMNS = [
    "key", "url", "caption", "status", "error_message", "language", "similarity",
    "original_width", "original_height", "fetch_time", "fetch_seconds",
]  # fmt: skip


# Fixed bins, so per-shard histograms add up.
SIMILARITY_BINS = np.linspace(-1.0, 1.0, 161)
CAPTION_BINS = np.unique(np.geomspace(1, 4096, 49).round())
SIZE_BINS = np.geomspace(8, 16384, 34)
FETCH_BINS = np.geomspace(1e-3, 300.0, 50)

# Statuses that say something about the image's host (the "top failing hosts" table).
HOST_FAILURES = frozenset(
    {
        Status.FAILED_TO_DOWNLOAD, Status.FAILED_TO_DECODE, Status.DISALLOWED_ROBOTS,
        Status.DISALLOWED_HEADER, Status.DISALLOWED_TDM, Status.BLOCKED_ADDRESS, Status.RATE_LIMITED,
    }
)  # fmt: skip
# Real failures: we tried to get an image and did not get a usable one. The "Error kinds" and
# examples tables show only these; rule-based rejections (filters, dedup, the CLIP threshold)
# are decisions, not errors, and their reasons stay with their status.
FAILURES = HOST_FAILURES | {Status.TOO_SMALL, Status.TOO_LARGE}
_EXAMPLES_PER_KIND = 2


@dataclasses.dataclass
class ShardInfo:
    """One shard's row of the per-shard table (from its stats json and its parquet)."""

    shard_no: int
    source: str = ""
    candidates: int = 0
    images_ok: int = 0
    kept: int = 0
    below_threshold: int = 0
    fetch_p50: float | None = None
    fetch_p90: float | None = None
    write_seconds: float | None = None
    written_at: str | None = None
    tar_bytes: int = 0
    tar_parts: int = 0
    has_stats: bool = False
    has_parquet: bool = False
    fetches: int = 0
    download_span: float | None = None  # first to last response of the shard, seconds
    thresholds: tuple[float, ...] = ()  # as written into its below_threshold rows

    @property
    def kept_rate(self) -> float | None:
        return self.kept / self.candidates if self.candidates else None


@dataclasses.dataclass
class RowTotals:
    """Per-row facts of every read parquet, folded into counters and fixed-bin histograms."""

    similarity_kept: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(SIMILARITY_BINS) - 1, int))
    similarity_rejected: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(SIMILARITY_BINS) - 1, int))
    caption_all: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(CAPTION_BINS) - 1, int))
    caption_kept: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(CAPTION_BINS) - 1, int))
    sizes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((len(SIZE_BINS) - 1,) * 2, int))
    fetch_ok: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(FETCH_BINS) - 1, int))
    fetch_failed: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(len(FETCH_BINS) - 1, int))
    languages: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    languages_kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    host_failures: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # (host, status)
    host_totals: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: dict[tuple[str, str], list[dict[str, str]]] = dataclasses.field(default_factory=dict)
    max_rejected: float | None = None
    min_kept: float | None = None
    rows: int = 0

    def add(self, other: RowTotals) -> None:
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, (np.ndarray, collections.Counter)):
                mine += theirs
        for kind, found in other.examples.items():
            self.examples.setdefault(kind, []).extend(found[: _EXAMPLES_PER_KIND - len(self.examples.get(kind, []))])
        self.max_rejected = _extreme(max, self.max_rejected, other.max_rejected)
        self.min_kept = _extreme(min, self.min_kept, other.min_kept)
        self.rows += other.rows


@dataclasses.dataclass
class ReportData:
    root: str
    generated_at: str
    shards: list[ShardInfo]
    status_counts: collections.Counter
    reasons: dict[str, collections.Counter]  # status -> error_kind -> count, every status but success
    http_status_counts: collections.Counter
    read: dict[str, Any]
    bytes: collections.Counter
    rows: RowTotals
    threshold: float | None
    threshold_note: str
    kept_grid: list[GridImage]
    rejected_grid: list[GridImage]
    problems: list[str]

    @property
    def candidates(self) -> int:
        return sum(self.status_counts.values())

    @property
    def error_kinds(self) -> dict[str, collections.Counter]:
        """The reasons of real failures only (not of below_threshold or filter rejections)."""
        return {status: kinds for status, kinds in self.reasons.items() if status in FAILURES}


def gather(root: str, threshold: float | None = None, grid: int = 24, max_shards: int | None = None) -> ReportData:
    """Read an output directory into a ReportData; ``max_shards`` caps the parquets read."""
    fs, base = url_to_fs(root)
    shards, problems = _list_shards(fs, base)
    if not shards:
        raise FileNotFoundError(f"no shard outputs ({{shard:06d}}_stats.json / .parquet) under {root}")
    stats_docs = _read_stats(fs, base, shards, problems)
    with_rows = [shards[no] for no in sorted(shards) if shards[no].has_parquet]
    if max_shards is not None and len(with_rows) > max_shards:
        problems.append(f"rows read from {max_shards} of {len(with_rows)} shards (--max_shards)")
        with_rows = choose_evenly(with_rows, max_shards)
    totals = RowTotals()
    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound on object stores
        for info, shard_totals in zip(with_rows, pool.map(lambda i: _try_read_rows(fs, base, i), with_rows)):
            if isinstance(shard_totals, Exception):
                problems.append(f"{info.shard_no:06d}.parquet unreadable: {shard_totals}")
            else:
                totals.add(shard_totals)
    ordered = [shards[no] for no in sorted(shards)]
    value, note = resolve_threshold(threshold, stats_docs, ordered, totals)
    kept = kept_grid(fs, base, ordered, grid, problems)
    rejected = rejected_grid(fs, base, ordered, grid, problems)
    return ReportData(
        root=root,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        shards=ordered,
        status_counts=_sum_counters(doc.get("status_counts", {}) for doc in stats_docs),
        reasons=_merge_error_kinds(stats_docs),
        http_status_counts=_sum_counters(doc.get("http_status_counts", {}) for doc in stats_docs),
        read=_merge_read(stats_docs),
        bytes=_sum_counters(doc.get("bytes", {}) for doc in stats_docs),
        rows=totals,
        threshold=value,
        threshold_note=note,
        kept_grid=kept,
        rejected_grid=rejected,
        problems=problems,
    )


def _list_shards(fs: Any, base: str) -> tuple[dict[int, ShardInfo], list[str]]:
    shards: dict[int, ShardInfo] = {}
    for path in fs.ls(base, detail=False):
        match = _SHARD_FILE.match(posixpath.basename(path))
        if not match:
            continue
        info = shards.setdefault(int(match.group(1)), ShardInfo(int(match.group(1))))
        if match.group(2) == "_stats.json":
            info.has_stats = True
        elif match.group(2) == ".parquet":
            info.has_parquet = True
        else:
            info.tar_parts += 1
    problems = [f"shard {no:06d} has no stats json" for no, info in sorted(shards.items()) if not info.has_stats]
    problems += [
        f"shard {no:06d} has no parquet: not complete (being written, or its write was cut off)"
        for no, info in sorted(shards.items())
        if not info.has_parquet
    ]
    return shards, problems


def _read_stats(fs: Any, base: str, shards: dict[int, ShardInfo], problems: list[str]) -> list[dict[str, Any]]:
    paths = [posixpath.join(base, f"{no:06d}_stats.json") for no, info in sorted(shards.items()) if info.has_stats]
    docs = []
    for path, blob in sorted(fs.cat(paths, on_error="return").items()) if paths else ():
        name = posixpath.basename(path)
        try:
            doc = json.loads(blob)
        except (TypeError, ValueError) as error:  # an exception object, or not JSON
            problems.append(f"{name} unreadable: {blob if isinstance(blob, Exception) else error}")
            continue
        info = shards[int(name[:6])]
        counts = doc.get("status_counts", {})
        fetch = doc.get("fetch_seconds", {})
        info.source = doc.get("source", "")
        info.candidates = doc.get("candidates", 0)
        info.images_ok = doc.get("images_ok", 0)
        info.kept = doc.get("kept", counts.get(Status.SUCCESS, 0))
        info.below_threshold = counts.get(Status.BELOW_THRESHOLD, 0)
        info.fetch_p50, info.fetch_p90 = fetch.get("p50"), fetch.get("p90")
        info.write_seconds, info.written_at = doc.get("write_seconds"), doc.get("written_at")
        info.tar_bytes = doc.get("bytes", {}).get("tar", 0)
        docs.append(doc)
    return docs


def _try_read_rows(fs: Any, base: str, info: ShardInfo) -> RowTotals | Exception:
    try:
        return _read_rows(fs, base, info)
    except (OSError, ValueError, KeyError) as error:  # pyarrow's errors are OSError/ValueError kinds
        return error


def _read_rows(fs: Any, base: str, info: ShardInfo) -> RowTotals:
    """One shard's parquet folded into RowTotals (and its download span/thresholds into ``info``)."""
    with fs.open(posixpath.join(base, f"{info.shard_no:06d}.parquet"), "rb") as source:
        table = pq.read_table(source, columns=_ROW_COLUMNS)
    rows = table.to_pydict()
    totals = RowTotals(rows=table.num_rows)
    status = np.array(rows["status"], dtype=object)
    kept = status == Status.SUCCESS
    similarity = np.array([np.nan if s is None else s for s in rows["similarity"]], float)
    scored_kept, scored_rejected = similarity[kept], similarity[status == Status.BELOW_THRESHOLD]
    totals.similarity_kept += np.histogram(np.clip(scored_kept, -1, 1), SIMILARITY_BINS)[0]
    totals.similarity_rejected += np.histogram(np.clip(scored_rejected, -1, 1), SIMILARITY_BINS)[0]
    totals.max_rejected = float(scored_rejected.max()) if scored_rejected.size else None
    totals.min_kept = float(scored_kept.min()) if scored_kept.size else None
    lengths = np.array([len(caption) for caption in rows["caption"]], float)
    totals.caption_all += np.histogram(np.clip(lengths, 1, CAPTION_BINS[-1] - 1), CAPTION_BINS)[0]
    totals.caption_kept += np.histogram(np.clip(lengths[kept], 1, CAPTION_BINS[-1] - 1), CAPTION_BINS)[0]
    languages = [language or "unknown" for language in rows["language"]]
    totals.languages.update(languages)
    totals.languages_kept.update(language for language, ok in zip(languages, kept) if ok)
    width = np.array([np.nan if w is None else w for w in rows["original_width"]], float)
    height = np.array([np.nan if h is None else h for h in rows["original_height"]], float)
    sized = ~(np.isnan(width) | np.isnan(height))
    totals.sizes += np.histogram2d(
        np.clip(width[sized], SIZE_BINS[0], SIZE_BINS[-1] - 1), np.clip(height[sized], SIZE_BINS[0], SIZE_BINS[-1] - 1),
        [SIZE_BINS, SIZE_BINS],
    )[0].astype(int)  # fmt: skip
    seconds = np.array([np.nan if s is None else s for s in rows["fetch_seconds"]], float)
    fetched, got_image = ~np.isnan(seconds), ~np.isnan(width)
    clipped = np.clip(seconds, FETCH_BINS[0], FETCH_BINS[-1] - 1e-9)
    totals.fetch_ok += np.histogram(clipped[fetched & got_image], FETCH_BINS)[0]
    totals.fetch_failed += np.histogram(clipped[fetched & ~got_image], FETCH_BINS)[0]
    times = [t for t in rows["fetch_time"] if t is not None]
    info.fetches = int(fetched.sum())
    info.download_span = (max(times) - min(times)).total_seconds() if times else None
    thresholds = set()
    for url, row_status, message, caption in zip(rows["url"], rows["status"], rows["error_message"], rows["caption"]):
        host = _host(url)
        totals.host_totals[host] += 1
        if row_status in HOST_FAILURES:
            totals.host_failures[(host, row_status)] += 1
        if row_status == Status.BELOW_THRESHOLD:
            found = _THRESHOLD_IN_MESSAGE.search(message or "")
            if found:
                thresholds.add(float(found.group(1)))
        elif row_status in FAILURES:
            examples = totals.examples.setdefault((row_status, error_kind(message)), [])
            if len(examples) < _EXAMPLES_PER_KIND:
                examples.append({"url": url, "caption": caption, "error_message": message or ""})
    info.thresholds = tuple(sorted(thresholds))
    return totals


def resolve_threshold(
    given: float | None, stats_docs: Sequence[dict[str, Any]], shards: Iterable[ShardInfo], totals: RowTotals
) -> tuple[float | None, str]:
    """The threshold to mark, and where it came from.

    In order: ``--threshold``; a ``clip_threshold`` in the stats files; the threshold the scoring
    stage wrote into every ``below_threshold`` row's message; else the gap between the highest
    rejected and the lowest kept similarity (the run's value lies in it).
    """
    if given is not None:
        return given, "given with --threshold"
    recorded = collections.Counter(doc["clip_threshold"] for doc in stats_docs if doc.get("clip_threshold") is not None)
    source = "recorded in the stats files"
    if not recorded:
        recorded = collections.Counter(value for info in shards for value in info.thresholds)
        source = "as written in the below_threshold rows"
    if recorded:
        value = recorded.most_common(1)[0][0]
        others = sorted(set(recorded) - {value})
        return value, source + (f"; some shards used {', '.join(f'{v:g}' for v in others)}" if others else "")
    if totals.min_kept is not None:
        low = f"above {totals.max_rejected:.3f} and " if totals.max_rejected is not None else ""
        return totals.min_kept, f"not recorded: inferred, {low}at most {totals.min_kept:.3f} (the lowest kept)"
    return None, "unknown: no scored samples"


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "(no host)"
    except ValueError:
        return "(bad url)"


def _extreme(pick: Any, a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return pick(values) if values else None


def _sum_counters(dicts: Iterable[dict[str, Any]]) -> collections.Counter:
    total: collections.Counter = collections.Counter()
    for counts in dicts:
        total.update({name: value for name, value in counts.items() if isinstance(value, (int, float))})
    return total


def _merge_error_kinds(docs: Sequence[dict[str, Any]]) -> dict[str, collections.Counter]:
    merged: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for doc in docs:
        for status, kinds in doc.get("error_kinds", {}).items():
            merged[status].update(kinds)
    return dict(merged)


def _merge_read(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    read = [doc.get("read") or {} for doc in docs]
    return {
        "records": sum(r.get("records", 0) for r in read),
        "non_http_links": sum(r.get("non_http_links", 0) for r in read),
        "bad_records": _sum_counters(r.get("bad_records", {}) for r in read),
        "bad_record_examples": [example for r in read for example in r.get("bad_record_examples", [])][:10],
    }
