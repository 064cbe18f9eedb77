"""Dataflow preset: CPU workers download, GPU workers score (Crawling@Home's split, by right fitting).

Only the scoring step carries an accelerator resource hint (``--clip_accelerator``); Dataflow's
right fitting then gives that step GPU workers and every other step ordinary ones. Right
fitting must not be mixed with the job-wide ``worker_accelerator`` service option, so the
preset refuses it. Runner v2 is the only Dataflow runner for Python SDKs since 2.45; Beam
adds its experiments itself.

Code reaches the workers in one of two ways: ``--setup_file`` (the default: this checkout's
setup.py, built into an sdist and installed on every worker at start) or
``--sdk_container_image`` (an image built from ``runners/Dockerfile`` that already holds the
project, torch with CUDA and Beam's boot; then nothing is staged).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from clipcrawl.runners import flags

RUNNER = "DataflowRunner"
# L4 GPUs come only on G2 machines; g2-standard-4 is the smallest with one (4 vCPU, 16 GB).
DEFAULT_ACCELERATOR = "type:nvidia-l4;count:1;machine_type:g2-standard-4;install-nvidia-driver"
_REPO_SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def repo_setup_file() -> str | None:
    """This checkout's setup.py (editable installs); None when clipcrawl was installed as a wheel."""
    return _REPO_SETUP if os.path.isfile(_REPO_SETUP) else None


def preset_args(argv: Sequence[str] = ()) -> list[str]:
    """Dataflow arguments, leaving alone every flag the user gave."""
    flags.require_shared_state(argv, "dataflow", workers_share_disk=False)
    services = ";".join(flags.values(argv, "dataflow_service_options"))
    if "worker_accelerator" in services:
        raise flags.PresetError(
            "the dataflow preset asks for GPUs on the scoring step only (right fitting, --clip_accelerator); "
            "Dataflow does not allow that together with the worker_accelerator service option: drop it"
        )
    defaults: dict[str, str | None] = {"runner": RUNNER, "clip_accelerator": DEFAULT_ACCELERATOR}
    if not flags.given(argv, "sdk_container_image") and not flags.given(argv, "setup_file"):
        setup_file = repo_setup_file()
        if setup_file is None:
            raise flags.PresetError(
                "the dataflow preset ships clipcrawl to the workers with --setup_file=PATH/TO/clipcrawl/setup.py "
                "or an image with --sdk_container_image=IMAGE (see runners/Dockerfile); give one of them"
            )
        defaults["setup_file"] = setup_file
    return flags.missing_defaults(argv, defaults)
