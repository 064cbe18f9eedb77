"""What ``clipcrawl status`` shows: progress, throughput, ETA, live leases, errors, leaderboard.

Crawling@Home kept thousands of volunteers going with a dashboard and a leaderboard; this
is the same read of the ledger, computed in SQL aggregates (so a ledger of a million shards
is not loaded into memory) within one snapshot, as plain JSON-ready values.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from clipcrawl.io.coordinator import Coordinator, as_utc, mask_url
from clipcrawl.io.leases import DEFAULT_MAX_ATTEMPTS
from clipcrawl.io.ledger_schema import DONE, FAILED, PENDING, RUNNING, SHARDS, current_version

DEFAULT_WINDOW_SECONDS = 3600.0
_ERROR_PREVIEW = 300


def _iso(value: dt.datetime | None) -> str | None:
    value = as_utc(value)
    return None if value is None else value.isoformat(timespec="seconds")


def _seconds(later: dt.datetime, earlier: dt.datetime | None) -> float | None:
    earlier = as_utc(earlier)
    return None if earlier is None else round((later - earlier).total_seconds(), 1)


def dashboard(
    coordinator: Coordinator,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    errors: int = 10,
    running: int = 50,
) -> dict[str, Any]:
    """The whole status report of one ledger snapshot; every secret masked."""
    with coordinator.read() as connection:
        now = coordinator.now(connection)
        report: dict[str, Any] = {
            "coordinator": mask_url(coordinator.url),
            "schema_version": current_version(connection),
            "now": _iso(now),
            **Coordinator.summary_in(connection),
        }
        report.update(_attempt_counts(connection, now, max_attempts))
        report["throughput"] = _throughput(connection, now, window_seconds)
        per_second = report["throughput"]["shards_per_minute"] / 60
        remaining = report["shards"][PENDING] + report["shards"][RUNNING] + report["failed_retryable"]
        report["remaining_shards"] = remaining
        report["eta_seconds"] = round(remaining / per_second) if remaining and per_second > 0 else (0 if not remaining else None)
        report["running"] = _running(connection, now, running)
        report["errors"] = _errors(connection, errors, coordinator)
        report["leaderboard"] = _leaderboard(connection)
    return report


def _attempt_counts(connection: sa.Connection, now: dt.datetime, max_attempts: int) -> dict[str, int]:
    """Failed shards split into parked (out of attempts) and retryable; leases already lapsed."""
    parked = connection.execute(
        sa.select(sa.func.count()).where(SHARDS.c.status == FAILED, SHARDS.c.attempts >= max_attempts)
    ).scalar()
    retryable = connection.execute(
        sa.select(sa.func.count()).where(SHARDS.c.status == FAILED, SHARDS.c.attempts < max_attempts)
    ).scalar()
    lapsed = connection.execute(
        sa.select(sa.func.count()).where(
            SHARDS.c.status == RUNNING,
            sa.or_(SHARDS.c.lease_expires_at.is_(None), SHARDS.c.lease_expires_at < now),
        )
    ).scalar()
    return {"failed_parked": int(parked), "failed_retryable": int(retryable), "expired_leases": int(lapsed),
            "max_attempts": max_attempts}


def _throughput(connection: sa.Connection, now: dt.datetime, window_seconds: float) -> dict[str, Any]:
    """Shards and pairs finished in the window, per minute of the time work actually ran in it.

    The span starts at the window's start or at the earliest start of a shard finished in
    it, whichever is later: ten minutes of work in an hour's window is not an hour's rate.
    """
    since = now - dt.timedelta(seconds=window_seconds)
    shards, kept, extracted, first_start = connection.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(SHARDS.c.pairs_kept), 0),
            sa.func.coalesce(sa.func.sum(SHARDS.c.pairs_extracted), 0),
            sa.func.min(SHARDS.c.started_at),
        ).where(SHARDS.c.status == DONE, SHARDS.c.finished_at >= since)
    ).one()
    shards, kept, extracted = int(shards), int(kept), int(extracted)
    start = max(since, as_utc(first_start)) if first_start is not None else since
    minutes = max((now - start).total_seconds(), 1.0) / 60
    return {
        "window_seconds": window_seconds,
        "shards_done": shards,
        "pairs_extracted": extracted,
        "pairs_kept": kept,
        "span_seconds": round(minutes * 60, 1),
        "shards_per_minute": round(shards / minutes, 3) if shards else 0.0,
        "pairs_kept_per_minute": round(kept / minutes, 1) if shards else 0.0,
    }


def _running(connection: sa.Connection, now: dt.datetime, limit: int) -> list[dict[str, Any]]:
    rows = connection.execute(
        sa.select(SHARDS.c.shard_no, SHARDS.c.uri, SHARDS.c.worker, SHARDS.c.nickname, SHARDS.c.lease_owner,
                  SHARDS.c.attempts, SHARDS.c.started_at, SHARDS.c.lease_expires_at)
        .where(SHARDS.c.status == RUNNING)
        .order_by(SHARDS.c.started_at, SHARDS.c.shard_no)
        .limit(limit)
    )
    leases = []
    for row in rows:
        expires = as_utc(row.lease_expires_at)
        leases.append({
            "shard_no": row.shard_no, "uri": row.uri, "worker": row.worker, "nickname": row.nickname,
            "owner": row.lease_owner, "attempts": row.attempts, "started_at": _iso(row.started_at),
            "age_seconds": _seconds(now, row.started_at),
            "lease_left_seconds": None if expires is None else round((expires - now).total_seconds(), 1),
            "expired": expires is None or expires < now,
        })
    return leases


def _errors(connection: sa.Connection, limit: int, coordinator: Coordinator) -> list[dict[str, Any]]:
    """The most recent errors of shards not done (a shard that later succeeded has none)."""
    rows = connection.execute(
        sa.select(SHARDS.c.shard_no, SHARDS.c.uri, SHARDS.c.status, SHARDS.c.attempts, SHARDS.c.worker,
                  SHARDS.c.finished_at, SHARDS.c.error)
        .where(SHARDS.c.error.is_not(None), SHARDS.c.status != DONE)
        .order_by(SHARDS.c.finished_at.desc().nulls_last(), SHARDS.c.shard_no)
        .limit(limit)
    )
    return [
        {"shard_no": row.shard_no, "uri": row.uri, "status": row.status, "attempts": row.attempts,
         "worker": row.worker, "at": _iso(row.finished_at),
         "error": coordinator.mask(row.error)[:_ERROR_PREVIEW]}
        for row in rows
    ]


def _leaderboard(connection: sa.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """Done shards and pairs kept per nickname, most pairs first (Crawling@Home's leaderboard)."""
    nickname = sa.func.coalesce(SHARDS.c.nickname, "(unknown)").label("nickname")
    kept = sa.func.coalesce(sa.func.sum(SHARDS.c.pairs_kept), 0).label("kept")
    shards = sa.func.count().label("shards")
    rows = connection.execute(
        sa.select(nickname, shards, kept, sa.func.coalesce(sa.func.sum(SHARDS.c.pairs_extracted), 0),
                  sa.func.max(SHARDS.c.finished_at))
        .where(SHARDS.c.status == DONE)
        .group_by(nickname)
        .order_by(kept.desc(), shards.desc(), nickname)
        .limit(limit)
    )
    return [
        {"rank": rank, "nickname": name, "shards": int(count), "pairs_kept": int(pairs),
         "pairs_extracted": int(extracted), "last_done_at": _iso(last)}
        for rank, (name, count, pairs, extracted, last) in enumerate(rows, start=1)
    ]
