"""A real PostgreSQL server for the ledger tests: initdb in a temp dir, 127.0.0.1, a free port.

Started once per test session (``initdb`` takes seconds), by a non-root user (PostgreSQL
refuses root: as root the server runs as ``postgres``, else ``nobody``), with password
authentication so that credentials and their masking are exercised for real. Each test gets
a fresh database (``postgres_url``). The server gets SIGINT (fast shutdown) at session end,
and also if the test process dies (``PR_SET_PDEATHSIG``), so no postmaster is left behind.
Tests skip, saying why, only when no server binary is installed (CI installs one).
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

USER = "clipcrawl"
_SERVER: PostgresServer | None = None


def find_bin_dir() -> str | None:
    """The directory holding ``initdb`` and ``postgres``: PATH first, then Debian's layout."""
    on_path = shutil.which("initdb")
    if on_path and os.path.exists(os.path.join(os.path.dirname(on_path), "postgres")):
        return os.path.dirname(on_path)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the server's child process (after the uid switch): SIGINT it if the tests die."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


class PostgresServer:
    """One postmaster in a temp dir; ``url(db)`` gives SQLAlchemy URLs with the password in them."""

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.password = f"ledger-{secrets.token_hex(8)}"
        self.port = _free_port()
        self.root = tempfile.mkdtemp(prefix="clipcrawl-pg-")
        self._process: subprocess.Popen | None = None
        self._log = None
        self._as: dict = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chmod(self.root, 0o700)
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def url(self, database: str = "postgres", password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql+psycopg://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data = os.path.join(self.root, "data")
        pwfile = os.path.join(self.root, "pw")
        with open(pwfile, "w", encoding="utf-8") as handle:
            handle.write(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        subprocess.run(
            [os.path.join(self.bin_dir, "initdb"), "-D", data, "-U", USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, cwd=self.root, **self._as,
        )
        self._log = open(os.path.join(self.root, "server.log"), "wb")
        self._process = subprocess.Popen(
            [os.path.join(self.bin_dir, "postgres"), "-D", data, "-p", str(self.port), "-k", self.root,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=self._log,
            cwd=self.root, preexec_fn=_die_with_parent, **self._as,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password,
                                dbname="postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = open(os.path.join(self.root, "server.log"), encoding="utf-8", errors="replace").read()
                    raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{log[-2000:]}") from None
                time.sleep(0.1)

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL (password included)."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def shared_server() -> PostgresServer:
    """The session's server, started on first use; skips when PostgreSQL is not installed."""
    global _SERVER
    if _SERVER is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed: "
                        "apt-get install postgresql to run the PostgreSQL ledger tests")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("psycopg is not installed: pip install 'psycopg[binary]' (in clipcrawl's [test] extra)")
        server = PostgresServer(bin_dir)
        server.start()
        _SERVER = server
    return _SERVER


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = shared_server()
    yield server
    global _SERVER
    if _SERVER is server:  # this fixture may be imported into several modules: stop once
        server.stop()
        _SERVER = None


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server (SQLAlchemy URL, password included)."""
    return postgres_server.create_database()
