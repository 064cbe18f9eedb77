"""Leases on shards: who holds them, for how long, and the heartbeat that keeps them alive.

A run that takes shards holds them under a lease (Crawling@Home's job timeout). While its
pipeline runs, a heartbeat thread in the launcher pushes the expiry forward every third of
the lease; a run that dies (SIGKILL, a lost machine) stops beating, its leases lapse, and
the next run that claims takes those shards back. A run whose Beam worker process dies
would beat forever: the ``WorkerWatch`` ends it instead. Everything here is launcher-side.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from types import FrameType, TracebackType
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
        self.stop()
        self._thread.join(timeout=max(self._interval, 5.0))

    def stop(self) -> None:
        """No more renewals (from any thread): the run cannot finish its shards any more."""
        self._stop.set()

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


# --- the run's Beam worker processes --------------------------------------------------------

# The FnApiRunner (multi_processing) starts each SDK worker with ``sh -c`` from a thread that
# raises this when the process exits non-zero; the runner itself waits for that worker's
# bundle forever (it does not retry). Return codes: -N when ``sh`` got signal N, 128+N when
# the worker under it did.
_BEAM_WORKER_EXIT = re.compile(r"Worker subprocess exited with return code (-?\d+)")
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})  # someone stopped the run on purpose
# Wakes the launcher's main thread. SIGURG's default action is to ignore it, so one that
# arrives after the watch ended (its handler already restored) does no harm.
_WAKE_SIGNAL = signal.SIGURG


class WorkerDied(RuntimeError):
    """One of the run's Beam worker processes exited mid-pipeline: the runner would hang."""


@dataclasses.dataclass(frozen=True)
class WorkerExit:
    """How a Beam worker process ended, as Beam reported it."""

    returncode: int

    @property
    def signal_number(self) -> int | None:
        if self.returncode < 0:
            return -self.returncode
        return self.returncode - 128 if 128 < self.returncode < 128 + signal.NSIG else None

    @property
    def stopped(self) -> bool:
        """SIGINT/SIGTERM: Ctrl-C (or a stop) reached the whole process group, workers too."""
        return self.signal_number in _STOP_SIGNALS

    def describe(self) -> str:
        number = self.signal_number
        if number is None:
            return f"a Beam worker process died (exit code {self.returncode})"
        name = signal.Signals(number).name if number in signal.valid_signals() else "?"
        why = ", as the kernel's out-of-memory killer sends" if number == signal.SIGKILL else ""
        return f"a Beam worker process {'was stopped' if self.stopped else 'died'} (signal {number}, {name}{why})"


def worker_exit(error: BaseException | None) -> WorkerExit | None:
    """The worker's exit if ``error`` is Beam's report of a worker process exiting non-zero."""
    match = _BEAM_WORKER_EXIT.fullmatch(str(error)) if isinstance(error, RuntimeError) else None
    return WorkerExit(int(match.group(1))) if match and int(match.group(1)) != 0 else None


class WorkerWatch:
    """Ends the run, instead of letting it hang, when one of its Beam worker processes dies.

    Beam's thread that started the worker raises when the process exits non-zero; this
    sees it through ``threading.excepthook`` (Beam's own report still goes to the previous
    hook), calls ``on_exit`` first (the launcher frees its shards there, so the ledger is
    right even if the main thread cannot be woken), then signals the main thread, whose
    handler raises ``WorkerDied``: the runner unwinds as it does on Ctrl-C. Only the first
    exit counts; the main thread is not interrupted while it is already stopping. Outside
    the main thread no signal handler can be set: ``on_exit`` still runs.
    """

    def __init__(self, on_exit: Callable[[WorkerExit], None]) -> None:
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._armed = False
        self._main: int | None = None  # the main thread's id, when a handler is installed
        self._previous_hook: Callable[[threading.ExceptHookArgs], object] = threading.excepthook
        self._previous_handler: object = None
        self._older: set[threading.Thread] = set()  # threads of earlier runs are not this run's workers
        self.exit: WorkerExit | None = None

    def __enter__(self) -> WorkerWatch:
        self._older = set(threading.enumerate())
        self._previous_hook = threading.excepthook
        threading.excepthook = self._hook
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(_WAKE_SIGNAL, self._raise)
            self._main = threading.main_thread().ident
        self._armed = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        with self._lock:  # after this, no wake-up is sent
            self._armed = False
        if threading.excepthook == self._hook:
            threading.excepthook = self._previous_hook
        if self._main is not None:
            signal.signal(_WAKE_SIGNAL, self._previous_handler)

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        found = worker_exit(args.exc_value) if args.thread not in self._older else None
        with self._lock:
            first = found is not None and self._armed and self.exit is None
            if first:
                self.exit = found
        self._previous_hook(args)
        if not first:
            return
        _LOG.error("%s; the runner does not retry, so this run stops", found.describe())
        try:
            self._on_exit(found)
        except Exception as error:  # noqa: BLE001 - on_exit logs its own (masked) details
            _LOG.error("after the worker's death: %s", type(error).__name__)
        with self._lock:
            if self._armed and self._main is not None:
                signal.pthread_kill(self._main, _WAKE_SIGNAL)

    def _raise(self, number: int, frame: FrameType | None) -> None:
        if self.exit is None:
            return  # a SIGURG of someone else's
        if isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit)):
            return  # already stopping (Ctrl-C reached the workers too): let that finish
        raise WorkerDied(self.exit.describe())
