"""Flink preset: Beam's portable FlinkRunner against an existing Flink cluster.

The Python SDK hands the pipeline to a Flink job server (a Java jar that Beam downloads
from Maven Central on first use and caches). With a cluster address the preset adds
``--flink_submit_uber_jar``: the job goes to the cluster's REST endpoint as one jar and no
job server process has to run. Python user code runs on the task managers in an SDK
harness; for a cluster the default ``--environment_type=DOCKER`` starts one container per task manager
from ``--environment_config`` (Beam's stock image when absent, with clipcrawl staged from
``--setup_file``; or an image built from ``runners/Dockerfile``, which needs no staging).
``--environment_type=EXTERNAL --environment_config=HOST:50000`` uses SDK worker pools that
run next to the task managers instead (``/opt/apache/beam/boot --worker_pool``). With
``--flink_master=[local]`` Beam starts an embedded Flink and runs user code in this process
(``LOOPBACK``); that needs Java and the job server jar too.

Flink ignores accelerator resource hints: give the task managers GPUs and pass
``--clip_device=cuda`` to score on them.
"""

from __future__ import annotations

from collections.abc import Sequence

from clipcrawl.runners import flags
from clipcrawl.runners.dataflow import repo_setup_file

RUNNER = "FlinkRunner"
_MAGIC_MASTERS = ("[local]", "[auto]")  # Beam starts an embedded Flink on this machine


def preset_args(argv: Sequence[str] = ()) -> list[str]:
    """Flink arguments, leaving alone every flag the user gave."""
    master = flags.value(argv, "flink_master")
    if not master:
        raise flags.PresetError(
            "the flink preset needs the cluster's REST address: --flink_master=HOST:8081 "
            "(or --flink_master=[local] for an embedded Flink on this machine)"
        )
    on_this_machine = master in _MAGIC_MASTERS or flags.is_loopback_host(master)
    flags.require_shared_state(argv, "flink", workers_share_disk=on_this_machine)
    # An embedded Flink runs user code in this process (LOOPBACK); a cluster in SDK containers.
    default_environment = "LOOPBACK" if master in _MAGIC_MASTERS else "DOCKER"
    defaults: dict[str, str | None] = {"runner": RUNNER, "environment_type": default_environment}
    if master not in _MAGIC_MASTERS:
        defaults["flink_submit_uber_jar"] = None
    environment = (flags.value(argv, "environment_type") or default_environment).upper()
    if environment == "DOCKER" and not flags.given(argv, "environment_config") and not flags.given(argv, "setup_file"):
        setup_file = repo_setup_file()
        if setup_file is None:
            raise flags.PresetError(
                "the flink preset needs an SDK image with clipcrawl (--environment_config=IMAGE, see "
                "runners/Dockerfile) or --setup_file=PATH/TO/clipcrawl/setup.py to stage it"
            )
        defaults["setup_file"] = setup_file
    return flags.missing_defaults(argv, defaults)
