"""The report page: one HTML file with its charts and images inline, rendered by Jinja2.

Autoescaping is on for everything: captions, URLs and error messages are web data and may
hold markup. A Content-Security-Policy allows only inline styles and ``data:`` images, so the
page cannot load anything from the network, nor run a script, even if some text slipped by.
"""

from __future__ import annotations

import collections
import os
from typing import Any
from urllib.parse import urlsplit

from clipcrawl.pipelines.report_data import ReportData
from clipcrawl.pipelines.report_plots import (
    FUNNEL,
    NEUTRAL,
    STATUS_COLOURS,
    render_plots,
)
from clipcrawl.pipelines.report_samples import as_data_uri
from clipcrawl.pipelines.report_template import TEMPLATE

STATUS_MEANING = {
    "success": "kept: in a tar",
    "below_threshold": "CLIP similarity under the threshold",
    "filtered_text": "caption too short or too long",
    "filtered_url": "URL not http(s), too long, or an excluded extension",
    "duplicate": "same link as an earlier candidate",
    "blocked_address": "host resolves to a private or loopback address",
    "disallowed_robots": "robots.txt disallows it (or is unreachable)",
    "disallowed_header": "X-Robots-Tag noai / noimageai / noindex",
    "disallowed_tdm": "TDM-Rep reserves mining rights",
    "rate_limited": "the host asked us to wait too long",
    "failed_to_download": "network or HTTP error, size cap, deadline",
    "failed_to_decode": "not an image Pillow can read",
    "too_small": "smaller side under the minimum",
    "too_large": "more pixels than the maximum",
}
MAX_SHARD_ROWS = 500
TOP_HOSTS = 15
TOP_KINDS = 30


def render(data: ReportData) -> str:
    """The whole page as a string."""
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["pct"] = lambda value: "–" if value is None else f"{100 * value:.1f}%"
    environment.filters["seconds"] = lambda value: "–" if value is None else f"{value:.3g} s"
    environment.filters["number"] = lambda value: f"{value:,}"
    template = environment.from_string(TEMPLATE)
    return template.render(**context(data))


def context(data: ReportData) -> dict[str, Any]:
    """Everything the template shows, as plain values."""
    total = data.candidates
    kept = data.status_counts.get("success", 0)
    images_ok = sum(info.images_ok for info in data.shards)
    return {
        "data": data,
        "title": f"clipcrawl report: {data.root}",
        "cards": [
            ("shards", f"{len(data.shards):,}"),
            ("candidates", f"{total:,}"),
            ("images downloaded", f"{images_ok:,}"),
            ("kept", f"{kept:,}"),
            ("kept rate", f"{100 * kept / total:.1f}%" if total else "–"),
            ("threshold", "–" if data.threshold is None else f"{data.threshold:g}"),
            ("in tars", _size(data.bytes.get("tar", 0))),
        ],
        "findings": findings(data),
        "plots": {plot.name: plot for plot in render_plots(data)},
        "statuses": _status_rows(data),
        "kinds": _kind_rows(data),
        "http": sorted(data.http_status_counts.items(), key=lambda item: -item[1]),
        "hosts": _host_rows(data),
        "examples": _example_rows(data),
        "languages": [
            (code, n, data.rows.languages_kept.get(code, 0), data.rows.languages_kept.get(code, 0) / n)
            for code, n in data.rows.languages.most_common(20)
        ],
        "shards": [_shard_row(info) for info in data.shards[:MAX_SHARD_ROWS]],
        "shards_left_out": max(0, len(data.shards) - MAX_SHARD_ROWS),
        "kept_grid": [_card(image) for image in data.kept_grid],
        "rejected_grid": [_card(image) for image in data.rejected_grid],
        "bad_records": sorted(data.read["bad_records"].items(), key=lambda item: -item[1]),
    }


def findings(data: ReportData) -> list[str]:
    """A few plain sentences that answer "why is my kept rate what it is"."""
    total = data.candidates
    if not total:
        return ["No candidate pairs at all: the inputs had no image links with alt text (see Input below)."]
    kept = data.status_counts.get("success", 0)
    notes = [f"{kept:,} of {total:,} candidates kept ({100 * kept / total:.1f}%)."]
    losses = [(sum(data.status_counts.get(s, 0) for s in statuses), step, statuses) for step, statuses in FUNNEL]
    for gone, step, statuses in sorted(losses, key=lambda loss: -loss[0])[:2]:
        if not gone:
            continue
        status = max(statuses, key=lambda s: data.status_counts.get(s, 0))
        kinds = data.reasons.get(status, collections.Counter())
        why = ""
        if kinds and status != "below_threshold":
            kind, count = kinds.most_common(1)[0]
            why = f"; the most common reason: “{kind}” ({count:,})"
        notes.append(f"{100 * gone / total:.1f}% were lost at the {step} step, mostly {status}{why}.")
    scored = kept + data.status_counts.get("below_threshold", 0)
    if scored and data.threshold is not None:
        below = data.status_counts.get("below_threshold", 0)
        notes.append(
            f"{below:,} of {scored:,} scored images ({100 * below / scored:.1f}%) fell below the threshold "
            f"{data.threshold:g} ({data.threshold_note})."
        )
    hosts = _host_rows(data)
    failures = sum(n for (host, status), n in data.rows.host_failures.items())
    if hosts and failures and hosts[0]["failures"] / failures >= 0.1:
        top = hosts[0]
        notes.append(f"One host, {top['host']}, accounts for {100 * top['failures'] / failures:.0f}% of download-side failures.")
    bad = sum(data.read["bad_records"].values())
    if bad:
        notes.append(f"{bad:,} input records could not be read (see Input).")
    return notes


def _status_rows(data: ReportData) -> list[dict[str, Any]]:
    total = data.candidates or 1
    rows = []
    for status, count in data.status_counts.most_common():
        if not count:
            continue
        kinds = data.reasons.get(status, collections.Counter()).most_common(3)
        rows.append(
            {
                "status": status,
                "count": count,
                "share": count / total,
                "meaning": STATUS_MEANING.get(status, ""),
                "colour": STATUS_COLOURS.get(status, NEUTRAL),
                "reasons": [] if status == "below_threshold" else kinds,
            }
        )
    return rows


def _kind_rows(data: ReportData) -> list[tuple[str, str, int]]:
    """Failures only: a CLIP rejection or a filtered caption is no error (see report_data.FAILURES)."""
    rows = [(status, kind, n) for status, kinds in data.error_kinds.items() for kind, n in kinds.items()]
    return sorted(rows, key=lambda row: -row[2])[:TOP_KINDS]


def _host_rows(data: ReportData) -> list[dict[str, Any]]:
    by_host: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (host, status), n in data.rows.host_failures.items():
        by_host[host][status] += n
    rows = [
        {
            "host": host,
            "failures": sum(statuses.values()),
            "candidates": data.rows.host_totals.get(host, 0),
            "statuses": statuses.most_common(),
        }
        for host, statuses in by_host.items()
    ]
    return sorted(rows, key=lambda row: (-row["failures"], row["host"]))[:TOP_HOSTS]


def _example_rows(data: ReportData) -> list[dict[str, Any]]:
    counts = {(status, kind): n for status, kinds in data.error_kinds.items() for kind, n in kinds.items()}
    ordered = sorted(data.rows.examples.items(), key=lambda item: -counts.get(item[0], 0))
    rows = []
    for (status, kind), found in ordered[:12]:
        for example in found:
            rows.append({"status": status, "kind": kind, "link": _link(example["url"]), **example})
    return rows


def _shard_row(info: Any) -> dict[str, Any]:
    rate = info.fetches / info.download_span if info.download_span else None
    return {
        "info": info,
        "source": os.path.basename(info.source.rstrip("/")) or info.source,
        "fetch_rate": "–" if rate is None else f"{rate:.1f}/s",
    }


def _card(image: Any) -> dict[str, Any]:
    return {
        "uri": as_data_uri(image.jpeg),
        "caption": image.caption,
        "similarity": "–" if image.similarity is None else f"{image.similarity:.3f}",
        "key": image.key,
        "link": _link(image.url),
        "url": image.url,
    }


def _link(url: str) -> str | None:
    """Only http(s) URLs become links; anything else (javascript:, data:) stays plain text."""
    try:
        return url if urlsplit(url).scheme in ("http", "https") else None
    except ValueError:
        return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"

