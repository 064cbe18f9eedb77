"""Dask preset: Beam's DaskRunner on a running ``dask.distributed`` scheduler.

Start a scheduler and workers (``dask scheduler``; ``dask worker tcp://HOST:8786`` on each
machine), then pass ``--dask_client_address=tcp://HOST:8786``. The preset names
``clipcrawl.runners.dask_runner.DaskRunner``: Beam's runner with two translation faults
corrected that clipcrawl's graph cannot run with (see that module). The runner evaluates
only the graph's last leaf; clipcrawl's graph has a single leaf, the shard writer.

Each input shard becomes its own Dask partition (``--dask_partition_size=1``), so shards
spread over the workers. Workers on this machine (a loopback scheduler) share its disk and
may use the default SQLite ledger; workers elsewhere need a ledger server and object storage.
"""

from __future__ import annotations

from collections.abc import Sequence

from clipcrawl.runners import flags

RUNNER = "clipcrawl.runners.dask_runner.DaskRunner"


def preset_args(argv: Sequence[str] = ()) -> list[str]:
    """Dask arguments, leaving alone every flag the user gave."""
    address = flags.value(argv, "dask_client_address")
    if not address and not flags.given(argv, "dask_scheduler_file"):
        raise flags.PresetError(
            "the dask preset needs a scheduler: --dask_client_address=tcp://HOST:8786 "
            "(start one with `dask scheduler` and workers with `dask worker tcp://HOST:8786`)"
        )
    flags.require_shared_state(argv, "dask", workers_share_disk=bool(address) and flags.is_loopback_host(address))
    defaults: dict[str, str | None] = {"runner": RUNNER}
    if not flags.given(argv, "dask_npartitions"):
        defaults["dask_partition_size"] = "1"
    return flags.missing_defaults(argv, defaults)
