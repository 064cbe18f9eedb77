"""The shard ledger ("the small coordinator table"): which inputs exist, who works on them, which are done.

Chosen by SQLAlchemy URL: SQLite by default (a local file, WAL mode, no server), PostgreSQL
(``postgresql+psycopg://``) for many machines. Each input URI gets a stable ``shard_no``
the first time it is registered; every output name derives from it, so a redone shard
overwrites its files instead of duplicating. A shard becomes ``done`` only after the
writer has committed its files.

Runs take shards with ``claim`` under a lease (``io/leases.py``). Claims are atomic: on
PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the claim transaction, on SQLite
every write transaction is ``BEGIN IMMEDIATE`` (one writer at a time). A shard is
claimable when it is pending, failed with attempts left, or its lease has expired; each
claim counts one attempt, and a shard that has used ``max_attempts`` is parked as
``failed`` with its last error until ``--retry_failed`` or ``--force``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from clipcrawl.io import faults
from clipcrawl.io.leases import DEFAULT_MAX_ATTEMPTS, Lease
from clipcrawl.io.ledger_engine import as_utc, make_engine, mask_secrets, mask_url, write_connection
from clipcrawl.io.ledger_schema import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SHARD_STATUSES,
    SHARDS,
    migrate,
)

__all__ = ["Coordinator", "ShardCounts", "as_utc", "mask_url", "mask_secrets", "SHARDS", "SHARD_STATUSES",
           "PENDING", "RUNNING", "DONE", "FAILED"]

_REGISTER_RETRIES = 5
_REGISTER_LOCK = 0x72656769  # PostgreSQL advisory lock key: one registration at a time ("regi")
_CHUNK = 500  # ids per IN (...) list, under SQLite's bound-parameter limit
_ERROR_CHARS = 4000


@dataclasses.dataclass(frozen=True)
class ShardCounts:
    """What a finished shard produced, as the writer measured it."""

    pairs_extracted: int
    images_ok: int
    pairs_kept: int
    bytes_written: int


def _chunks(numbers: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(numbers), _CHUNK):
        yield numbers[start : start + _CHUNK]


class Coordinator:
    """Register inputs, lease shards to runs, record how each one ended."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = make_engine(url)
        self.dialect = self._engine.dialect.name
        self.schema_version_found = migrate(self._engine, self._write_connection)

    def close(self) -> None:
        self._engine.dispose()

    def mask(self, text: str) -> str:
        return mask_secrets(text, self.url)

    # --- transactions -------------------------------------------------------------------

    def _write_connection(self) -> sa.Connection:
        return write_connection(self._engine)

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; on SQLite it holds the database's single write lock throughout."""
        with self._write_connection() as connection, connection.begin():
            yield connection

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read transaction (one consistent snapshot), for reports."""
        with self._engine.connect() as connection, connection.begin():
            yield connection

    def now(self, connection: sa.Connection) -> dt.datetime:
        """The ledger's clock: PostgreSQL's, so machines with skewed clocks agree on leases."""
        if self.dialect == "postgresql":
            return as_utc(connection.execute(sa.select(sa.func.now())).scalar())
        return dt.datetime.now(dt.timezone.utc)

    # --- registration -------------------------------------------------------------------

    def register(self, uris: Iterable[str]) -> dict[str, int]:
        """``uri -> shard_no`` for every URI; new ones get the next free numbers, in order."""
        wanted = list(dict.fromkeys(uris))
        for attempt in range(_REGISTER_RETRIES):
            try:
                return self._register_once(wanted)
            except IntegrityError:  # another run registered the same numbers first: re-read
                if attempt == _REGISTER_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _register_once(self, uris: list[str]) -> dict[str, int]:
        with self._write() as connection:
            if self.dialect == "postgresql":
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_REGISTER_LOCK)))
            known = self._numbers(connection, uris)
            new = [uri for uri in uris if uri not in known]
            if new:
                top = connection.execute(sa.select(sa.func.max(SHARDS.c.shard_no))).scalar()
                first = 0 if top is None else top + 1
                rows = [{"shard_no": first + i, "uri": uri, "status": PENDING} for i, uri in enumerate(new)]
                connection.execute(SHARDS.insert(), rows)
                known.update({row["uri"]: row["shard_no"] for row in rows})
            faults.point("coordinator.register.in_transaction")
            return {uri: known[uri] for uri in uris}

    @staticmethod
    def _numbers(connection: sa.Connection, uris: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(uris), _CHUNK):
            query = sa.select(SHARDS.c.uri, SHARDS.c.shard_no).where(SHARDS.c.uri.in_(uris[start : start + _CHUNK]))
            found.update({uri: shard_no for uri, shard_no in connection.execute(query)})
        return found

    def to_process(self, shard_nos: Iterable[int], force: bool = False) -> list[tuple[int, str]]:
        """The given shards that are not done (all of them with ``force``), by shard number."""
        rows: list[tuple[int, str]] = []
        with self.read() as connection:
            for chunk in _chunks(sorted(set(shard_nos))):
                query = sa.select(SHARDS.c.shard_no, SHARDS.c.uri, SHARDS.c.status).where(SHARDS.c.shard_no.in_(chunk))
                rows += [(no, uri) for no, uri, status in connection.execute(query) if force or status != DONE]
        return sorted(rows)

    # --- leases -------------------------------------------------------------------------

    def claim(
        self,
        lease: Lease,
        limit: int | None = None,
        shard_nos: Iterable[int] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        force: bool = False,
    ) -> list[tuple[int, str]]:
        """Lease up to ``limit`` claimable shards (of ``shard_nos``, or of all) to ``lease``.

        Expired leases are first returned to pending (or parked, if out of attempts). A
        shard under another run's live lease is never taken, not even with ``force``
        (which also takes done and parked shards).
        """
        if limit is not None and limit <= 0:
            return []
        scope = None if shard_nos is None else sorted(set(shard_nos))
        claimable = SHARDS.c.status.in_((PENDING, FAILED, DONE)) if force else sa.or_(
            SHARDS.c.status == PENDING, sa.and_(SHARDS.c.status == FAILED, SHARDS.c.attempts < max_attempts)
        )
        taken: list[tuple[int, str]] = []
        with self._write() as connection:
            now = self.now(connection)
            self._expire_leases(connection, now, max_attempts)
            for chunk in _chunks(scope) if scope is not None else [None]:
                remaining = None if limit is None else limit - len(taken)
                if remaining == 0:
                    break
                query = sa.select(SHARDS.c.shard_no, SHARDS.c.uri).where(claimable)
                if chunk is not None:
                    query = query.where(SHARDS.c.shard_no.in_(chunk))
                query = query.order_by(SHARDS.c.attempts, SHARDS.c.shard_no).limit(remaining)
                if self.dialect == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                taken += [(no, uri) for no, uri in connection.execute(query)]
            for chunk in _chunks(sorted(no for no, _ in taken)):
                connection.execute(
                    SHARDS.update()
                    .where(SHARDS.c.shard_no.in_(chunk))
                    .values(
                        status=RUNNING,
                        attempts=SHARDS.c.attempts + 1,
                        worker=lease.worker,
                        nickname=lease.nickname,
                        lease_owner=lease.owner,
                        lease_expires_at=now + dt.timedelta(seconds=lease.seconds),
                        started_at=now,
                        finished_at=None,
                    )
                )
            faults.point("coordinator.claim.in_transaction")
        return sorted(taken)

    @staticmethod
    def _expire_leases(connection: sa.Connection, now: dt.datetime, max_attempts: int) -> None:
        """Running shards whose lease lapsed: back to pending, or parked when out of attempts."""
        lapsed = sa.and_(
            SHARDS.c.status == RUNNING,
            sa.or_(SHARDS.c.lease_expires_at.is_(None), SHARDS.c.lease_expires_at < now),
        )
        message = sa.literal("lease of ") + sa.func.coalesce(SHARDS.c.worker, "?") + sa.literal(
            " expired: the run holding it stopped or lost the ledger"
        )
        connection.execute(
            SHARDS.update()
            .where(lapsed)
            .values(
                status=sa.case((SHARDS.c.attempts >= max_attempts, FAILED), else_=PENDING),
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now,
                error=message,
            )
        )

    def extend(self, lease: Lease) -> int:
        """Push the expiry of ``lease``'s running shards forward; how many it still holds."""
        with self._write() as connection:
            now = self.now(connection)
            result = connection.execute(
                SHARDS.update()
                .where(SHARDS.c.lease_owner == lease.owner, SHARDS.c.status == RUNNING)
                .values(lease_expires_at=now + dt.timedelta(seconds=lease.seconds))
            )
            return int(result.rowcount)

    def hold(self, shard_no: int, owner: str, seconds: float) -> bool:
        """Renew one shard's lease for ``seconds`` if ``owner`` still holds it; whether it does.

        The writer asks this before it touches a shard's files: a run whose lease lapsed
        while it worked (its heartbeat could not reach the ledger) learns that another run
        took the shard, and a run that still holds it cannot lose it while it writes. Atomic
        with ``claim``: the renewal and a reclaim never both succeed.
        """
        with self._write() as connection:
            now = self.now(connection)
            result = connection.execute(
                SHARDS.update()
                .where(SHARDS.c.shard_no == shard_no, SHARDS.c.lease_owner == owner, SHARDS.c.status == RUNNING)
                .values(lease_expires_at=now + dt.timedelta(seconds=seconds))
            )
            return result.rowcount == 1

    def release(self, lease: Lease, reason: str) -> int:
        """Give ``lease``'s running shards back (pending, the attempt not counted): a clean stop."""
        with self._write() as connection:
            result = connection.execute(
                SHARDS.update()
                .where(SHARDS.c.lease_owner == lease.owner, SHARDS.c.status == RUNNING)
                .values(
                    status=PENDING,
                    attempts=sa.case((SHARDS.c.attempts > 0, SHARDS.c.attempts - 1), else_=0),
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=self.now(connection),
                    error=self.mask(reason)[:_ERROR_CHARS],
                )
            )
            return int(result.rowcount)

    def reset_failed(self, shard_nos: Iterable[int] | None = None) -> int:
        """Failed shards (parked ones included) back to pending with fresh attempts."""
        with self._write() as connection:
            condition = SHARDS.c.status == FAILED
            if shard_nos is None:
                return int(connection.execute(SHARDS.update().where(condition).values(status=PENDING, attempts=0)).rowcount)
            count = 0
            for chunk in _chunks(sorted(set(shard_nos))):
                where = sa.and_(condition, SHARDS.c.shard_no.in_(chunk))
                count += connection.execute(SHARDS.update().where(where).values(status=PENDING, attempts=0)).rowcount
            return count

    def start(self, shard_nos: Iterable[int], worker: str) -> None:
        """Mark shards running for ``worker`` without a lease (claim expires them at once)."""
        with self._write() as connection:
            self._update(
                connection, shard_nos, status=RUNNING, attempts=SHARDS.c.attempts + 1, worker=worker,
                nickname=worker.split("@", 1)[0], started_at=self.now(connection), finished_at=None, error=None,
            )

    # --- outcomes (called by the writer in worker processes) --------------------------------

    def complete(self, shard_no: int, counts: ShardCounts, owner: str | None = None) -> bool:
        """The shard's files are committed: mark it done with what it produced; whether it was.

        ``owner`` (a lease's owner) restricts the update to a shard that lease still holds:
        a run whose lease was taken over must not mark the new holder's shard done.
        """
        with self._write() as connection:
            condition = SHARDS.c.lease_owner == owner if owner is not None else None
            marked = self._update(
                connection, [shard_no], condition, status=DONE, finished_at=self.now(connection), error=None,
                lease_owner=None, lease_expires_at=None, **dataclasses.asdict(counts),
            )
            faults.point("coordinator.complete.in_transaction")
            return marked == 1

    def fail(self, shard_nos: Iterable[int], error: str, only_running: bool = False, owner: str | None = None) -> int:
        """Record a failure; how many shards it marked. ``only_running`` leaves shards that
        finished meanwhile untouched.

        ``owner`` limits it to shards that lease holds (so it never clears another run's
        lease). The attempt stays counted: the next claim retries the shard while it has
        attempts left.
        """
        conditions = []
        if only_running:
            conditions.append(SHARDS.c.status == RUNNING)
        if owner is not None:
            conditions.append(SHARDS.c.lease_owner == owner)
        with self._write() as connection:
            marked = self._update(
                connection, shard_nos, sa.and_(*conditions) if conditions else None, status=FAILED,
                finished_at=self.now(connection), error=self.mask(error)[:_ERROR_CHARS],
                lease_owner=None, lease_expires_at=None,
            )
            faults.point("coordinator.fail.in_transaction")
            return marked

    @staticmethod
    def _update(connection: sa.Connection, shard_nos: Iterable[int], condition: Any = None, **values: Any) -> int:
        """Update the given shards (those matching ``condition``); how many rows changed."""
        changed = 0
        for chunk in _chunks(sorted(set(shard_nos))):
            where = SHARDS.c.shard_no.in_(chunk)
            if condition is not None:
                where = sa.and_(where, condition)
            changed += int(connection.execute(SHARDS.update().where(where).values(**values)).rowcount)
        return changed

    # --- reading ------------------------------------------------------------------------

    def shards(
        self, shard_nos: Iterable[int] | None = None, statuses: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of the ledger (all, or the given shards / statuses), by shard number, times in UTC."""
        query = sa.select(SHARDS)
        if statuses is not None:
            query = query.where(SHARDS.c.status.in_(list(statuses)))
        with self.read() as connection:
            if shard_nos is None:
                rows = [dict(row._mapping) for row in connection.execute(query)]
            else:
                rows = []
                for chunk in _chunks(sorted(set(shard_nos))):
                    rows += [dict(r._mapping) for r in connection.execute(query.where(SHARDS.c.shard_no.in_(chunk)))]
        for row in rows:
            for column in ("lease_expires_at", "started_at", "finished_at"):
                row[column] = as_utc(row[column])
        return sorted(rows, key=lambda row: row["shard_no"])

    def summary(self) -> dict[str, Any]:
        """Shards by status and the pair counts of done shards (the head of ``clipcrawl status``)."""
        with self.read() as connection:
            return self.summary_in(connection)

    @staticmethod
    def summary_in(connection: sa.Connection) -> dict[str, Any]:
        by_status = dict(
            connection.execute(sa.select(SHARDS.c.status, sa.func.count()).group_by(SHARDS.c.status)).all()
        )
        totals = connection.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(SHARDS.c.pairs_extracted), 0),
                sa.func.coalesce(sa.func.sum(SHARDS.c.images_ok), 0),
                sa.func.coalesce(sa.func.sum(SHARDS.c.pairs_kept), 0),
                sa.func.coalesce(sa.func.sum(SHARDS.c.bytes_written), 0),
            ).where(SHARDS.c.status == DONE)
        ).one()
        return {
            "shards": {status: int(by_status.get(status, 0)) for status in SHARD_STATUSES},
            "pairs_extracted": int(totals[0]),
            "images_downloaded": int(totals[1]),
            "pairs_kept": int(totals[2]),
            "bytes_written": int(totals[3]),
        }
