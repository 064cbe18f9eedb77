"""The ledger's tables and their versioned, in-place migrations.

Version 1 is the first ``shards`` table (no version table: ledgers written by clipcrawl
0.1 before leases). Version 2 adds who holds a lease (``lease_owner``) and the nickname
the leaderboard counts. Each ``Coordinator`` brings the schema up to date when it opens the
ledger; the upgrade holds the database's write lock (PostgreSQL: an advisory lock; SQLite:
``BEGIN IMMEDIATE``), so processes opening one ledger at once migrate it exactly once.
Alembic would be one more dependency and a scripts folder for two ``ADD COLUMN`` steps.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
SHARD_STATUSES = (PENDING, RUNNING, DONE, FAILED)

LATEST_VERSION = 2
_MIGRATION_LOCK = 0x636C6970  # PostgreSQL advisory lock key for schema changes ("clip")

METADATA = sa.MetaData()
SHARDS = sa.Table(
    "shards",
    METADATA,
    sa.Column("shard_no", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("uri", sa.Text, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False, default=PENDING, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.Text),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True), index=True),
    sa.Column("pairs_extracted", sa.BigInteger, nullable=False, default=0),
    sa.Column("images_ok", sa.BigInteger, nullable=False, default=0),
    sa.Column("pairs_kept", sa.BigInteger, nullable=False, default=0),
    sa.Column("bytes_written", sa.BigInteger, nullable=False, default=0),
    sa.Column("error", sa.Text),
    # version 2
    sa.Column("nickname", sa.Text),
    sa.Column("lease_owner", sa.Text, index=True),
)
SCHEMA_VERSIONS = sa.Table(
    "ledger_schema_version",
    METADATA,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


class LedgerSchemaError(RuntimeError):
    """The ledger was written by a newer clipcrawl, or is not a clipcrawl ledger."""


def _v1_to_v2(connection: sa.Connection) -> None:
    """Lease owner and nickname columns; nicknames recovered from ``worker`` (``nick@host``)."""
    connection.execute(sa.text("ALTER TABLE shards ADD COLUMN nickname TEXT"))
    connection.execute(sa.text("ALTER TABLE shards ADD COLUMN lease_owner TEXT"))
    connection.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_shards_lease_owner ON shards (lease_owner)"))
    connection.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_shards_finished_at ON shards (finished_at)"))
    workers = connection.execute(sa.text("SELECT shard_no, worker FROM shards WHERE worker IS NOT NULL")).all()
    rows = [{"no": no, "nick": worker.split("@", 1)[0]} for no, worker in workers]
    if rows:
        connection.execute(sa.text("UPDATE shards SET nickname = :nick WHERE shard_no = :no"), rows)


# version -> the step that brings a ledger from version - 1 to it
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {2: _v1_to_v2}


def current_version(connection: sa.Connection) -> int:
    """0 for an empty database, 1 for a pre-version ledger, else the highest applied version."""
    inspector = sa.inspect(connection)
    if inspector.has_table(SCHEMA_VERSIONS.name):
        return int(connection.execute(sa.select(sa.func.max(SCHEMA_VERSIONS.c.version))).scalar() or 0)
    return 1 if inspector.has_table(SHARDS.name) else 0


def migrate(engine: sa.Engine, write_connection: Callable[[], sa.Connection]) -> int:
    """Bring the ledger to ``LATEST_VERSION``; return the version found before.

    ``write_connection`` opens a connection whose ``begin()`` takes the write lock (SQLite).
    """
    with engine.connect() as probe:
        found = current_version(probe)
    if found == LATEST_VERSION:
        return found
    with write_connection() as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        found = current_version(connection)  # another process may have migrated meanwhile
        if found > LATEST_VERSION:
            raise LedgerSchemaError(
                f"the ledger has schema version {found}; this clipcrawl knows up to {LATEST_VERSION}: upgrade clipcrawl"
            )
        now = dt.datetime.now(dt.timezone.utc)
        if found == 0:
            METADATA.create_all(connection)
            connection.execute(SCHEMA_VERSIONS.insert(), [{"version": LATEST_VERSION, "applied_at": now}])
            return found
        SCHEMA_VERSIONS.create(connection, checkfirst=True)
        if found == 1:
            connection.execute(SCHEMA_VERSIONS.insert(), [{"version": 1, "applied_at": now}])
        for version in range(found + 1, LATEST_VERSION + 1):
            MIGRATIONS[version](connection)
            connection.execute(SCHEMA_VERSIONS.insert(), [{"version": version, "applied_at": now}])
    return found
