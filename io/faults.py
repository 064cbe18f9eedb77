"""Named kill points for the crash-safety harness (``tests/test_crash_safety.py``).

``point("writer.after_commit")`` does nothing unless the environment arms it:

- ``CLIPCRAWL_FAULT_POINT=name`` SIGKILLs the process the ``n``-th time it reaches ``name``
  (``CLIPCRAWL_FAULT_HIT=n``, default 1; counted per process).
- ``CLIPCRAWL_FAULT_TRACE=path`` appends each point's name to ``path`` as it is reached, so
  the harness can list the points a run passes through.

The environment is read once, at import, so an unarmed ``point`` costs one global lookup;
worker processes that Beam starts inherit it. Keep points out of per-record inner loops.
"""

from __future__ import annotations

import os
import signal

ENV_POINT = "CLIPCRAWL_FAULT_POINT"
ENV_HIT = "CLIPCRAWL_FAULT_HIT"
ENV_TRACE = "CLIPCRAWL_FAULT_TRACE"

_ARMED = os.environ.get(ENV_POINT) or None
_HIT = int(os.environ.get(ENV_HIT) or 1)
_TRACE = os.environ.get(ENV_TRACE) or None
_ACTIVE = _ARMED is not None or _TRACE is not None
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if the harness armed ``name``; otherwise return at once."""
    if not _ACTIVE:
        return
    if _TRACE is not None:
        with open(_TRACE, "a", encoding="utf-8") as trace:
            trace.write(f"{name}\n")
    if name == _ARMED:
        _seen[name] = _seen.get(name, 0) + 1
        if _seen[name] >= _HIT:
            os.kill(os.getpid(), signal.SIGKILL)
