"""The shard ledger ("the small coordinator table"): which inputs exist, which are done.

Chosen by SQLAlchemy URL: SQLite by default (a local file, no server), PostgreSQL for many
machines. Each input URI gets a stable ``shard_no`` the first time it is registered; every
output name derives from it, so a redone shard overwrites its files instead of duplicating.
A shard becomes ``done`` only after the writer has committed its files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
SHARD_STATUSES = (PENDING, RUNNING, DONE, FAILED)

_METADATA = sa.MetaData()
SHARDS = sa.Table(
    "shards",
    _METADATA,
    sa.Column("shard_no", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("uri", sa.Text, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, default=PENDING, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.Text),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("pairs_extracted", sa.BigInteger, nullable=False, default=0),
    sa.Column("images_ok", sa.BigInteger, nullable=False, default=0),
    sa.Column("pairs_kept", sa.BigInteger, nullable=False, default=0),
    sa.Column("bytes_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("error", sa.Text),
)

_REGISTER_RETRIES = 5


@dataclasses.dataclass(frozen=True)
class ShardCounts:
    """What a finished shard produced, as the writer measured it."""

    pairs_extracted: int
    images_ok: int
    pairs_kept: int
    bytes_written: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets DirectRunner worker processes read while one writes; wait, don't fail, on locks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def mask_url(url: str) -> str:
    """The coordinator URL with any password hidden, for logs and ``clipcrawl status``."""
    return sa.make_url(url).render_as_string(hide_password=True)


class Coordinator:
    """Register inputs, hand out the shards still to do, record how each one ended."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = sa.create_engine(url, future=True)
        if self._engine.dialect.name == "sqlite":
            database = self._engine.url.database
            if database and database != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
        _METADATA.create_all(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        with self._engine.begin() as connection:
            yield connection

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
        with self._transaction() as connection:
            known = self._numbers(connection, uris)
            new = [uri for uri in uris if uri not in known]
            if new:
                top = connection.execute(sa.select(sa.func.max(SHARDS.c.shard_no))).scalar()
                first = 0 if top is None else top + 1
                rows = [{"shard_no": first + i, "uri": uri, "status": PENDING} for i, uri in enumerate(new)]
                connection.execute(SHARDS.insert(), rows)
                known.update({row["uri"]: row["shard_no"] for row in rows})
            return {uri: known[uri] for uri in uris}

    @staticmethod
    def _numbers(connection: sa.Connection, uris: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(uris), 500):  # stay under SQLite's bound-parameter limit
            chunk = uris[start : start + 500]
            query = sa.select(SHARDS.c.uri, SHARDS.c.shard_no).where(SHARDS.c.uri.in_(chunk))
            found.update({uri: shard_no for uri, shard_no in connection.execute(query)})
        return found

    def to_process(self, shard_nos: Iterable[int], force: bool = False) -> list[tuple[int, str]]:
        """The given shards that are not done (all of them with ``force``), by shard number."""
        wanted = sorted(set(shard_nos))
        rows: list[tuple[int, str]] = []
        with self._transaction() as connection:
            for start in range(0, len(wanted), 500):
                query = sa.select(SHARDS.c.shard_no, SHARDS.c.uri, SHARDS.c.status).where(
                    SHARDS.c.shard_no.in_(wanted[start : start + 500])
                )
                rows += [(no, uri) for no, uri, status in connection.execute(query) if force or status != DONE]
        return sorted(rows)

    def start(self, shard_nos: Iterable[int], worker: str) -> None:
        """Mark shards as being worked on by ``worker`` (one more attempt each)."""
        self._update(
            shard_nos,
            status=RUNNING,
            attempts=SHARDS.c.attempts + 1,
            worker=worker,
            started_at=_now(),
            finished_at=None,
            error=None,
        )

    def complete(self, shard_no: int, counts: ShardCounts) -> None:
        """The shard's files are committed: mark it done with what it produced."""
        self._update(
            [shard_no],
            status=DONE,
            finished_at=_now(),
            error=None,
            **dataclasses.asdict(counts),
        )

    def fail(self, shard_nos: Iterable[int], error: str, only_running: bool = False) -> None:
        """Record a failure; ``only_running`` leaves shards that finished meanwhile untouched."""
        condition = SHARDS.c.status == RUNNING if only_running else None
        self._update(shard_nos, condition=condition, status=FAILED, finished_at=_now(), error=error[:4000])

    def _update(self, shard_nos: Iterable[int], condition: Any = None, **values: Any) -> None:
        numbers = sorted(set(shard_nos))
        with self._transaction() as connection:
            for start in range(0, len(numbers), 500):
                where = SHARDS.c.shard_no.in_(numbers[start : start + 500])
                if condition is not None:
                    where = sa.and_(where, condition)
                connection.execute(SHARDS.update().where(where).values(**values))

    def shards(self) -> list[dict[str, Any]]:
        """Every row of the ledger, by shard number."""
        with self._transaction() as connection:
            result = connection.execute(sa.select(SHARDS).order_by(SHARDS.c.shard_no))
            return [dict(row._mapping) for row in result]

    def summary(self) -> dict[str, Any]:
        """Shards by status and the pair counts of done shards (what ``clipcrawl status`` shows)."""
        with self._transaction() as connection:
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
