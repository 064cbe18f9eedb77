"""The launcher's watch over its Beam worker processes (``io/leases.py``: ``WorkerWatch``).

Beam's FnApiRunner reports a worker process that exited non-zero by raising in the thread
that started it, then waits forever. Here a real thread raises Beam's exact error while the
main thread blocks the way the runner does (a lock wait with no timeout): the watch must
call ``on_exit`` and raise ``WorkerDied`` in the main thread. A real SIGKILLed worker of a
whole run is in ``tests/test_ledger_run.py``.
"""

from __future__ import annotations

import signal
import threading

import pytest

from clipcrawl.io.leases import WorkerDied, WorkerExit, WorkerWatch, worker_exit

# Beam's own message (apache_beam/runners/portability/local_job_service.py).
BEAM_REPORT = "Worker subprocess exited with return code {}"

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.mark.parametrize(
    ("code", "signal_number", "stopped"),
    [(137, 9, False), (-9, 9, False), (1, None, False), (-2, 2, True), (130, 2, True), (143, 15, True)],
)
def test_worker_exit_reads_the_signal_from_beams_report(code, signal_number, stopped) -> None:
    found = worker_exit(RuntimeError(BEAM_REPORT.format(code)))
    assert found == WorkerExit(code)
    assert found.signal_number == signal_number and found.stopped is stopped


def test_only_beams_report_counts_as_a_worker_exit() -> None:
    assert worker_exit(RuntimeError("something else")) is None
    assert worker_exit(ValueError(BEAM_REPORT.format(137))) is None
    assert worker_exit(None) is None and worker_exit(RuntimeError(BEAM_REPORT.format(0))) is None
    assert "died (signal 9, SIGKILL" in WorkerExit(137).describe() and "exit code 1" in WorkerExit(1).describe()
    assert "was stopped (signal 2, SIGINT)" in WorkerExit(-2).describe()


def _report_from_a_thread(code: int, go: threading.Event | None = None) -> threading.Thread:
    """A thread that raises Beam's report of a worker exit (once ``go`` is set, if given)."""

    def run_worker() -> None:
        if go is not None:
            go.wait(30)
        raise RuntimeError(BEAM_REPORT.format(code))

    thread = threading.Thread(target=run_worker, name="run_worker")
    thread.start()
    return thread


def test_a_dead_worker_wakes_the_blocked_main_thread_with_worker_died() -> None:
    seen: list[WorkerExit] = []
    never = threading.Lock()
    never.acquire()
    go = threading.Event()  # both threads start before the main thread blocks: no race with the wake-up
    threads: list[threading.Thread] = []
    with pytest.raises(WorkerDied, match=r"signal 9, SIGKILL"):
        with WorkerWatch(seen.append) as watch:
            threads += [_report_from_a_thread(137, go)]
            threads += [_report_from_a_thread(-2, go)]  # the second, later, changes nothing
            go.set()
            assert not never.acquire(timeout=30)  # blocked like the runner; woken by the watch
    for thread in threads:
        thread.join()
    assert seen == [WorkerExit(137)] and watch.exit == WorkerExit(137)
    assert threading.excepthook != watch._hook  # hook and handler restored
    assert signal.getsignal(signal.SIGURG) == signal.SIG_DFL


def test_only_workers_started_while_watching_count() -> None:
    seen: list[WorkerExit] = []
    go = threading.Event()
    earlier = _report_from_a_thread(137, go)  # a worker thread of an earlier run, still winding down
    with WorkerWatch(seen.append):
        go.set()
        earlier.join()
        _report_from_a_thread(0).join()  # exit code 0 is a normal end (Beam does not even raise)
        boom = threading.Thread(target=lambda: 1 / 0)
        boom.start()
        boom.join()  # other errors pass to the previous hook untouched
    _report_from_a_thread(137).join()  # the run is over: not this watch's business
    assert seen == []
