"""Connecting to the ledger: one engine per URL, its dialect's quirks, and keeping secrets out of text.

SQLite: WAL (worker processes read while one writes), a 30 s busy timeout (wait, don't
fail, on a lock), and write transactions that start with ``BEGIN IMMEDIATE`` so that a
claim holds the single write lock from its first read to its commit. PostgreSQL needs
nothing special here; its claims lock rows (``FOR UPDATE SKIP LOCKED``). Credentials come
only from the URL or the driver's environment (``PGPASSWORD``, ``~/.pgpass``) and are
masked wherever text leaves the process.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

WRITE_OPTION = "clipcrawl_write"  # execution option marking a connection's transactions as writes


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; the ledger stores UTC, so say so."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


def mask_url(url: str) -> str:
    """The coordinator URL with any password hidden, for logs and ``clipcrawl status``."""
    return sa.make_url(url).render_as_string(hide_password=True)


def mask_secrets(text: str, url: str) -> str:
    """``text`` (a driver error, a log line) with the ledger's password replaced by ``***``."""
    secrets = {os.environ.get("PGPASSWORD") or ""}
    try:
        password = sa.make_url(url).password
    except sa.exc.ArgumentError:
        password = None
    if password:
        secrets |= {str(password), quote(str(password), safe="")}
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


_SQLITE_BUSY_SECONDS = 30.0


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """A busy timeout, then WAL; the driver's own BEGIN is switched off for ``_sqlite_begin``.

    WAL is a property of the file: only the first connection to a new ledger switches it,
    and that switch needs a lock SQLite does not wait for (two processes opening a new
    ledger at once got "database is locked"), so it is retried until the busy timeout.
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_SECONDS * 1000)}")
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    write = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str) -> sa.Engine:
    """The engine for a ledger URL (a SQLite file's folder is created if missing)."""
    engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def write_connection(engine: sa.Engine) -> sa.Connection:
    """A connection whose transactions are writes (``BEGIN IMMEDIATE`` on SQLite)."""
    connection = engine.connect()
    connection.execution_options(**{WRITE_OPTION: True})
    return connection
