"""The report's charts, drawn with matplotlib and returned as self-contained SVG data URIs.

Figures are made with ``matplotlib.figure.Figure`` directly (no pyplot, no global backend), so
making a report never changes the plotting state of the process that calls it. Text stays text
in the SVG (``svg.fonttype: none``): small files that stay sharp at any zoom.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from clipcrawl.pipelines.report_data import (
    CAPTION_BINS,
    FETCH_BINS,
    SIMILARITY_BINS,
    SIZE_BINS,
    ReportData,
)
from clipcrawl.transforms.status import Status

KEPT, REJECTED, FAILED, FILTERED, POLICY, NEUTRAL = "#2e7d32", "#ef6c00", "#c62828", "#78909c", "#6a1b9a", "#90a4ae"
STATUS_COLOURS = {
    Status.SUCCESS: KEPT,
    Status.BELOW_THRESHOLD: REJECTED,
    Status.FILTERED_TEXT: FILTERED,
    Status.FILTERED_URL: FILTERED,
    Status.DUPLICATE: FILTERED,
    Status.BLOCKED_ADDRESS: POLICY,
    Status.DISALLOWED_ROBOTS: POLICY,
    Status.DISALLOWED_HEADER: POLICY,
    Status.DISALLOWED_TDM: POLICY,
    Status.RATE_LIMITED: POLICY,
    Status.FAILED_TO_DOWNLOAD: FAILED,
    Status.FAILED_TO_DECODE: FAILED,
    Status.TOO_SMALL: FAILED,
    Status.TOO_LARGE: FAILED,
}

# Where a candidate can leave the pipeline, in pipeline order: (step it failed, statuses).
FUNNEL = (
    ("text, URL and dedup filters", (Status.FILTERED_TEXT, Status.FILTERED_URL, Status.DUPLICATE)),
    ("address guard, robots, headers, rate", (Status.BLOCKED_ADDRESS, Status.DISALLOWED_ROBOTS,
                                               Status.DISALLOWED_HEADER, Status.DISALLOWED_TDM, Status.RATE_LIMITED)),
    ("download", (Status.FAILED_TO_DOWNLOAD,)),
    ("decode and size", (Status.FAILED_TO_DECODE, Status.TOO_SMALL, Status.TOO_LARGE)),
    ("CLIP threshold", (Status.BELOW_THRESHOLD,)),
)  # fmt: skip

_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "clipcrawl",  # stable ids: the same data makes the same file
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "legend.frameon": False,
}


@dataclasses.dataclass(frozen=True)
class Plot:
    name: str  # element id in the page
    title: str
    uri: str  # data:image/svg+xml;base64,...
    alt: str


def render_plots(data: ReportData) -> list[Plot]:
    """Every chart the data can fill, in page order; charts without data are left out."""
    from matplotlib import rc_context

    makers: list[tuple[str, str, Callable[[Any, ReportData], str | None]]] = [
        ("funnel", "Where candidates were lost", _funnel),
        ("statuses", "Candidates by status", _statuses),
        ("similarity", "Kept and rejected samples by similarity", _similarity),
        ("captions", "Caption length", _captions),
        ("languages", "Caption languages", _languages),
        ("sizes", "Original image sizes", _sizes),
        ("fetch", "Fetch time per image", _fetch),
        ("shards", "Kept rate by shard", _shards),
    ]
    plots = []
    with rc_context(_STYLE):
        for name, title, draw in makers:
            figure = _figure()
            alt = draw(figure, data)
            if alt is not None:
                _whole_counts(figure)
                plots.append(Plot(name, title, _svg_uri(figure), alt))
    return plots


def _whole_counts(figure: Any) -> None:
    """Axes that count things get whole-number ticks (no 0.25 of a sample)."""
    from matplotlib.ticker import MaxNLocator

    for ax in figure.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if label in _COUNT_LABELS:
                axis.set_major_locator(MaxNLocator(nbins=6, integer=True))


_COUNT_LABELS = frozenset({"candidates", "samples", "fetches", "candidates still in the running"})


def _figure(width: float = 6.4, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", dpi=144, metadata={"Date": None})  # dpi: rasterized parts only
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _plain_log_axis(axis: Any, base: int = 10) -> None:
    """Log-scale ticks written as plain numbers (20, 50, 100), not 2x10^1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0,) if base == 2 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=base, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _funnel(figure: Any, data: ReportData) -> str | None:
    total = data.candidates
    if not total:
        return None
    remaining, labels, lost = [total], ["candidates"], []
    for step, statuses in FUNNEL:
        gone = sum(data.status_counts.get(status, 0) for status in statuses)
        lost.append(gone)
        remaining.append(remaining[-1] - gone)
        labels.append(f"after {step}")
    ax = figure.add_subplot()
    y = np.arange(len(remaining))[::-1]
    colours = [NEUTRAL] * (len(remaining) - 1) + [KEPT]
    ax.barh(y, remaining, color=colours)
    ax.set_yticks(y, labels)
    for row, left, gone in zip(y[1:], remaining[1:], lost):
        note = f"{left:,}" + (f"   −{gone:,} ({gone / total:.0%})" if gone else "")
        ax.annotate(note, (left, row), xytext=(4, 0), textcoords="offset points", va="center",
                    color=FAILED if gone else "black")  # fmt: skip
    ax.annotate(f"{total:,}", (total, y[0]), xytext=(4, 0), textcoords="offset points", va="center")
    ax.set_xlim(0, total * 1.35)
    ax.set_xlabel("candidates still in the running")
    worst = max(range(len(lost)), key=lost.__getitem__)
    return f"{total} candidates, {remaining[-1]} kept; most were lost at the {FUNNEL[worst][0]} step ({lost[worst]})"


def _statuses(figure: Any, data: ReportData) -> str | None:
    counts = [(status, n) for status, n in data.status_counts.most_common() if n]
    if not counts:
        return None
    ax = figure.add_subplot()
    y = np.arange(len(counts))[::-1]
    ax.barh(y, [n for _, n in counts], color=[STATUS_COLOURS.get(s, NEUTRAL) for s, _ in counts])
    ax.set_yticks(y, [status for status, _ in counts])
    total = sum(n for _, n in counts)
    for row, (_, n) in zip(y, counts):
        ax.annotate(f"{n:,} ({n / total:.0%})", (n, row), xytext=(4, 0), textcoords="offset points", va="center")
    ax.set_xlim(0, max(n for _, n in counts) * 1.3)
    ax.set_xlabel("candidates")
    return "; ".join(f"{status} {n}" for status, n in counts)


def _similarity(figure: Any, data: ReportData) -> str | None:
    kept, rejected = data.rows.similarity_kept, data.rows.similarity_rejected
    if not (kept.sum() + rejected.sum()):
        return None
    ax = figure.add_subplot()
    ax.stairs(rejected, SIMILARITY_BINS, fill=True, color=REJECTED, alpha=0.85, label=f"below threshold ({rejected.sum():,})")
    ax.stairs(kept, SIMILARITY_BINS, fill=True, color=KEPT, alpha=0.85, label=f"kept ({kept.sum():,})")
    used = np.nonzero(kept + rejected)[0]
    low, high = SIMILARITY_BINS[used[0]], SIMILARITY_BINS[used[-1] + 1]
    if data.threshold is not None:
        ax.axvline(data.threshold, color="black", linestyle="--", linewidth=1.2)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the label above the bars
        ax.annotate(f"threshold {data.threshold:g}", (data.threshold, 1), xycoords=("data", "axes fraction"),
                    xytext=(4, -2), textcoords="offset points", va="top", fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})  # fmt: skip
        low, high = min(low, data.threshold), max(high, data.threshold)
    pad = 0.05 * (high - low or 1)
    ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel("cosine similarity of image and caption")
    ax.set_ylabel("samples")
    ax.legend(loc="best")
    return f"{kept.sum()} kept and {rejected.sum()} rejected samples; threshold {data.threshold}"


def _captions(figure: Any, data: ReportData) -> str | None:
    everything, kept = data.rows.caption_all, data.rows.caption_kept
    if not everything.sum():
        return None
    ax = figure.add_subplot()
    ax.stairs(everything, CAPTION_BINS, fill=True, color=NEUTRAL, label=f"all candidates ({everything.sum():,})")
    ax.stairs(kept, CAPTION_BINS, fill=True, color=KEPT, alpha=0.9, label=f"kept ({kept.sum():,})")
    used = np.nonzero(everything)[0]
    ax.set_xscale("log")
    ax.set_xlim(CAPTION_BINS[max(used[0] - 1, 0)], CAPTION_BINS[min(used[-1] + 2, len(CAPTION_BINS) - 1)])
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("caption length, characters (log scale)")
    ax.set_ylabel("candidates")
    ax.legend(loc="best")
    return f"caption lengths of {everything.sum()} candidates"


def _languages(figure: Any, data: ReportData, top: int = 12) -> str | None:
    languages = data.rows.languages.most_common(top)
    if not languages:
        return None
    ax = figure.add_subplot()
    y = np.arange(len(languages))[::-1]
    ax.barh(y, [n for _, n in languages], color=NEUTRAL, height=0.7, label="candidates")
    ax.barh(y, [data.rows.languages_kept.get(code, 0) for code, _ in languages], color=KEPT, height=0.4, label="kept")
    ax.set_yticks(y, [code for code, _ in languages])
    ax.set_xlabel("candidates")
    ax.legend(loc="lower right")
    return "; ".join(f"{code} {n}" for code, n in languages)


def _sizes(figure: Any, data: ReportData) -> str | None:
    sizes = data.rows.sizes
    if not sizes.sum():
        return None
    from matplotlib.colors import LogNorm

    ax = figure.add_subplot()
    masked = np.ma.masked_equal(sizes.T, 0)  # rows: height, columns: width
    mesh = ax.pcolormesh(SIZE_BINS, SIZE_BINS, masked, cmap="viridis", rasterized=True,
                         norm=LogNorm(vmin=1, vmax=max(int(sizes.max()), 2)))  # fmt: skip
    colourbar = figure.colorbar(mesh, ax=ax, label="images")
    _plain_log_axis(colourbar.ax.yaxis)
    used_w, used_h = np.nonzero(sizes.sum(axis=1))[0], np.nonzero(sizes.sum(axis=0))[0]
    low = SIZE_BINS[max(min(used_w[0], used_h[0]) - 1, 0)]
    high = SIZE_BINS[min(max(used_w[-1], used_h[-1]) + 2, len(SIZE_BINS) - 1)]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    _plain_log_axis(ax.xaxis, base=2)
    _plain_log_axis(ax.yaxis, base=2)
    ax.set_xlabel("original width, px")
    ax.set_ylabel("original height, px")
    return f"original sizes of {sizes.sum()} downloaded images"


def _fetch(figure: Any, data: ReportData) -> str | None:
    ok, failed = data.rows.fetch_ok, data.rows.fetch_failed
    if not (ok.sum() + failed.sum()):
        return None
    ax = figure.add_subplot()
    ax.stairs(ok, FETCH_BINS, fill=True, color=KEPT, alpha=0.85, label=f"got an image ({ok.sum():,})")
    ax.stairs(failed, FETCH_BINS, fill=True, color=FAILED, alpha=0.6, label=f"no image ({failed.sum():,})")
    used = np.nonzero(ok + failed)[0]
    ax.set_xscale("log")
    ax.set_xlim(FETCH_BINS[max(used[0] - 1, 0)], FETCH_BINS[min(used[-1] + 2, len(FETCH_BINS) - 1)])
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("seconds from request to last byte (log scale)")
    ax.set_ylabel("fetches")
    ax.legend(loc="best")
    return f"fetch times of {ok.sum() + failed.sum()} requests"


def _shards(figure: Any, data: ReportData) -> str | None:
    shards = [info for info in data.shards if info.candidates]
    if len(shards) < 2:
        return None
    ax = figure.add_subplot()
    numbers = [info.shard_no for info in shards]
    rates = [100 * (info.kept_rate or 0.0) for info in shards]
    if len(shards) <= 60:
        ax.bar(numbers, rates, color=KEPT, width=0.8)
    else:
        ax.plot(numbers, rates, ".", color=KEPT, markersize=3, rasterized=len(shards) > 2000)
    ax.axhline(100 * sum(i.kept for i in shards) / sum(i.candidates for i in shards), color="black", linestyle=":",
               linewidth=1, label="all shards")  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(max(rates) * 1.25, 1.0))
    ax.set_xlabel("shard")
    ax.set_ylabel("kept, % of candidates")
    ax.legend(loc="upper right")
    return f"kept rate of {len(shards)} shards"
