"""Leases on shards: who holds them, for how long, and the heartbeat that keeps them alive.

A run that takes shards holds them under a lease (Crawling@Home's job timeout). While its
pipeline runs, a heartbeat thread in the launcher pushes the expiry forward every third of
the lease; a run that dies (SIGKILL, a lost machine) stops beating, its leases lapse, and
the next run that claims takes those shards back. Everything here is launcher-side.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipcrawl.io.coordinator import Coordinator

_LOG = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class LedgerConfig:
    """How a run takes shards from the ledger (``--claim``, ``--lease_seconds``, ...)."""

    claim: int | None = None  # None: every shard of the inputs; N: at most N (volunteer model)
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if self.claim is not None and self.claim < 0:
            raise ValueError(f"--claim must be >= 0 (0 registers the inputs only), got {self.claim}")
        if not self.lease_seconds > 0:
            raise ValueError(f"--lease_seconds must be > 0, got {self.lease_seconds}")
        if self.max_attempts < 1:
            raise ValueError(f"--max_attempts must be >= 1, got {self.max_attempts}")


@dataclasses.dataclass(frozen=True)
class Lease:
    """One run's identity in the ledger: a unique owner token plus the names people see."""

    owner: str  # unique per run: host, pid and a random suffix
    worker: str  # nickname@host, as before leases existed
    nickname: str
    seconds: float

    @classmethod
    def for_run(cls, nickname: str, seconds: float = DEFAULT_LEASE_SECONDS) -> Lease:
        host = socket.gethostname()
        return cls(
            owner=f"{host}:{os.getpid()}:{uuid.uuid4().hex[:12]}",
            worker=f"{nickname}@{host}",
            nickname=nickname,
            seconds=seconds,
        )


class Heartbeat:
    """Extends ``lease``'s shards every ``lease.seconds / 3`` until the ``with`` block ends.

    Failures to reach the ledger are logged (masked) and retried on the next beat: a lease
    only lapses if the ledger stays unreachable for a whole lease.
    """

    def __init__(self, coordinator: Coordinator, lease: Lease, interval: float | None = None) -> None:
        self._coordinator = coordinator
        self._lease = lease
        self._interval = interval if interval is not None else lease.seconds / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="clipcrawl-lease-heartbeat", daemon=True)
        self.beats = 0  # successful extensions, for tests and logs

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=max(self._interval, 5.0))

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                held = self._coordinator.extend(self._lease)
            except Exception as error:  # the ledger may be briefly unreachable: keep trying
                _LOG.warning("lease heartbeat failed: %s", self._coordinator.mask(str(error)))
                continue
            self.beats += 1
            if held == 0:
                _LOG.debug("lease heartbeat: %s holds no running shard any more", self._lease.owner)
