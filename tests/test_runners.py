"""The local runner preset: never the Prism download, respects what the user gave."""

from __future__ import annotations

from clipcrawl.pipelines.build_dataset import with_local_defaults
from clipcrawl.runners.direct import RUNNER, default_workers, preset_args


def test_preset_defaults_to_one_worker_process_per_core() -> None:
    assert preset_args([]) == [f"--runner={RUNNER}", "--direct_running_mode=multi_processing",
                               f"--direct_num_workers={default_workers()}"]


def test_in_memory_mode_gets_one_worker_and_given_flags_are_kept() -> None:
    assert preset_args(["--direct_running_mode=in_memory"]) == [f"--runner={RUNNER}", "--direct_num_workers=1"]
    assert preset_args(["--direct_running_mode", "in_memory"]) == [f"--runner={RUNNER}", "--direct_num_workers=1"]
    assert preset_args(["--direct_num_workers=5"]) == [f"--runner={RUNNER}", "--direct_running_mode=multi_processing"]
    # The last occurrence wins, as it does for Beam's own parser.
    assert "--direct_num_workers=1" not in preset_args(
        ["--direct_running_mode=in_memory", "--direct_running_mode=multi_processing"]
    )


def test_an_explicit_runner_gets_no_preset() -> None:
    argv = ["--runner=DataflowRunner", "--project=p"]
    assert with_local_defaults(argv) == argv
    assert with_local_defaults(["--input=x"])[0] == f"--runner={RUNNER}"
