"""Local preset: Beam's portable direct engine, in one process or several.

Beam's ``DirectRunner`` first tries to download the Prism runner binary and falls back to
its ``FnApiRunner`` engine when that fails; naming ``FnApiRunner`` skips the download (and
the delay offline) and runs the same engine. It honours ``--direct_running_mode`` and
``--direct_num_workers``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

RUNNER = "FnApiRunner"
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def preset_args(argv: Sequence[str] = (), workers: int | None = None) -> list[str]:
    """Runner arguments, leaving alone any direct-runner flag the user already gave."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--direct_running_mode")
    parser.add_argument("--direct_num_workers")
    given, _ = parser.parse_known_args(list(argv))
    args = [f"--runner={RUNNER}"]
    mode = given.direct_running_mode
    if mode is None:
        mode = "multi_processing"
        args.append(f"--direct_running_mode={mode}")
    if given.direct_num_workers is None:
        count = 1 if mode == "in_memory" else workers or default_workers()
        args.append(f"--direct_num_workers={count}")
    return args
