"""Runner presets: option lists only, the user's flags win, and shared state must be reachable."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import apache_beam
import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, PortableOptions

from clipcrawl.pipelines import cli
from clipcrawl.pipelines.build_dataset import with_local_defaults
from clipcrawl.runners import dask, dataflow, flags
from clipcrawl.runners.direct import RUNNER, default_workers, preset_args
from clipcrawl.runners.presets import PRESETS, pop_preset

REPO = Path(__file__).resolve().parent.parent
POSTGRES = "--coordinator=postgresql+psycopg://crawler@ledger.internal/clipcrawl"
REMOTE_IO = ["--input=gs://bucket/in/*.warc.wat.gz", "--output=gs://bucket/out", POSTGRES]


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
    assert with_local_defaults(["--preset=direct", "--input=x"])[0] == f"--runner={RUNNER}"


def test_preset_flag_is_consumed_in_both_spellings() -> None:
    assert pop_preset(["--a=1", "--preset", "dask", "--b"]) == ("dask", ["--a=1", "--b"])
    assert pop_preset(["--preset=flink", "--preset=dataflow"]) == ("dataflow", [])
    assert set(PRESETS) == {"direct", "dataflow", "flink", "dask"}
    with pytest.raises(flags.PresetError, match="unknown --preset=spark; choose one of: direct, dataflow"):
        with_local_defaults(["--preset=spark"])


def test_a_bad_preset_is_a_usage_error_on_the_command_line(capsys) -> None:
    assert cli.main(["run", "--preset=dataflow", "--input=in.wat.gz", "--output=out"]) == cli.EXIT_USAGE
    assert "error: the dataflow preset runs the shard writer on other machines" in capsys.readouterr().err


# --- Dataflow ---------------------------------------------------------------------------------


def test_dataflow_preset_stages_setup_py_and_hints_a_gpu_for_scoring() -> None:
    argv = with_local_defaults(["--preset=dataflow", *REMOTE_IO])
    options = PipelineOptions(argv).get_all_options()
    assert options["runner"] == "DataflowRunner"
    assert options["setup_file"] == str(REPO / "setup.py")
    assert options["clip_accelerator"] == dataflow.DEFAULT_ACCELERATOR
    assert "machine_type:g2-standard-4" in dataflow.DEFAULT_ACCELERATOR  # L4s come only on G2 machines


def test_dataflow_user_flags_win() -> None:
    argv = with_local_defaults(["--preset=dataflow", *REMOTE_IO, "--clip_accelerator=type:nvidia-tesla-t4;count:1",
                                "--setup_file=/src/clipcrawl/setup.py", "--runner=TestDataflowRunner"])
    options = PipelineOptions(argv).get_all_options()
    assert options["clip_accelerator"] == "type:nvidia-tesla-t4;count:1"
    assert options["setup_file"] == "/src/clipcrawl/setup.py" and options["runner"] == "TestDataflowRunner"
    assert sum(arg.startswith("--clip_accelerator") for arg in argv) == 1
    image = with_local_defaults(["--preset=dataflow", *REMOTE_IO, "--sdk_container_image=reg/clipcrawl:1"])
    assert not any(arg.startswith("--setup_file") for arg in image)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input=gs://b/in.wat.gz", "--output=gs://b/out"], "cannot reach a SQLite file"),
        (["--input=gs://b/in.wat.gz", "--output=gs://b/out", "--coordinator=sqlite:////tmp/l.sqlite"],
         "cannot reach a SQLite file"),
        (["--input=gs://b/in.wat.gz", "--output=/data/out", POSTGRES], "--output=/data/out"),
        (["--input=/data/in.wat.gz", "--output=gs://b/out", POSTGRES], "--input=/data/in.wat.gz"),
        ([*REMOTE_IO, "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1"], "right fitting"),
    ],
)
def test_dataflow_preset_refuses_what_workers_cannot_use(argv, message) -> None:
    with pytest.raises(flags.PresetError, match=re.escape(message)):
        with_local_defaults(["--preset=dataflow", *argv])


def test_dataflow_without_a_checkout_needs_setup_file_or_image(monkeypatch) -> None:
    monkeypatch.setattr(dataflow, "_REPO_SETUP", "/nonexistent/setup.py")
    with pytest.raises(flags.PresetError, match="--setup_file=PATH/TO/clipcrawl/setup.py or an image"):
        with_local_defaults(["--preset=dataflow", *REMOTE_IO])
    assert "--setup_file=/x/setup.py" in with_local_defaults(["--preset=dataflow", *REMOTE_IO, "--setup_file=/x/setup.py"])


# --- Flink (validated, not run: no Flink job server jar can be fetched here) ------------------


def test_flink_preset_targets_a_cluster_through_an_uber_jar_and_docker_workers(tmp_path) -> None:
    from apache_beam.runners.portability.flink_runner import FlinkRunner
    from apache_beam.runners.portability.flink_uber_jar_job_server import FlinkUberJarJobServer

    image = "registry.internal/clipcrawl:cuda"
    argv = with_local_defaults(["--preset=flink", "--flink_master=flink-jm.internal:8081", "--flink_version=1.19",
                                f"--environment_config={image}", "--parallelism=8", *REMOTE_IO])
    options = PipelineOptions(argv)
    flink, portable = options.view_as(FlinkRunnerOptions), options.view_as(PortableOptions)
    assert options.get_all_options()["runner"] == "FlinkRunner"
    assert (flink.flink_master, flink.flink_version, flink.flink_submit_uber_jar, flink.parallelism) == (
        "flink-jm.internal:8081", "1.19", True, 8)
    assert portable.environment_type == "DOCKER" and not options.get_all_options()["setup_file"]
    runner = FlinkRunner()
    environment = runner.default_environment(options)  # what the task managers would start
    assert environment.container_image == image
    job_server = runner.default_job_server(options)  # constructed, not started: nothing is downloaded
    try:
        assert isinstance(job_server, FlinkUberJarJobServer)
        assert job_server._master_url == "http://flink-jm.internal:8081"
    finally:
        shutil.rmtree(job_server._temp_dir, ignore_errors=True)


def test_flink_preset_needs_a_master_and_stages_code_without_an_image() -> None:
    with pytest.raises(flags.PresetError, match="--flink_master=HOST:8081"):
        with_local_defaults(["--preset=flink", *REMOTE_IO])
    argv = with_local_defaults(["--preset=flink", "--flink_master=flink-jm.internal:8081", *REMOTE_IO])
    assert f"--setup_file={REPO / 'setup.py'}" in argv
    with pytest.raises(flags.PresetError, match="cannot reach a SQLite file"):
        with_local_defaults(["--preset=flink", "--flink_master=flink-jm.internal:8081", "--output=gs://b/o"])


def test_flink_on_this_machine_runs_user_code_here_and_may_use_sqlite() -> None:
    argv = with_local_defaults(["--preset=flink", "--flink_master=[local]", "--input=in.wat.gz", "--output=out"])
    options = PipelineOptions(argv)
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    assert not options.view_as(FlinkRunnerOptions).flink_submit_uber_jar
    assert "--environment_type=DOCKER" in with_local_defaults(
        ["--preset=flink", "--flink_master=localhost:8081", "--output=out"])  # a local cluster still uses SDK containers


# --- Dask -------------------------------------------------------------------------------------


def test_dask_preset_names_the_fixed_runner_and_one_shard_per_partition() -> None:
    from apache_beam.runners.dask.dask_runner import DaskOptions

    argv = with_local_defaults(["--preset=dask", "--dask_client_address=tcp://127.0.0.1:8786", "--output=out"])
    options = PipelineOptions(argv)
    assert options.get_all_options()["runner"] == dask.RUNNER == "clipcrawl.runners.dask_runner.DaskRunner"
    # What Beam's DaskRunner hands to dask.distributed.Client and dask.bag.from_sequence:
    assert options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True) == {
        "address": "tcp://127.0.0.1:8786", "partition_size": 1}
    kept = with_local_defaults(["--preset=dask", "--dask_client_address=tcp://localhost:8786", "--dask_npartitions=4"])
    assert not any(arg.startswith("--dask_partition_size") for arg in kept)


def test_dask_preset_needs_a_scheduler_and_a_reachable_ledger_for_remote_workers() -> None:
    with pytest.raises(flags.PresetError, match="--dask_client_address=tcp://HOST:8786"):
        with_local_defaults(["--preset=dask", "--output=out"])
    with pytest.raises(flags.PresetError, match="cannot reach a SQLite file"):
        with_local_defaults(["--preset=dask", "--dask_client_address=tcp://dask.internal:8786", "--output=s3://b/o"])
    assert with_local_defaults(["--preset=dask", "--dask_client_address=tcp://dask.internal:8786", *REMOTE_IO])


def test_loopback_hosts() -> None:
    for address in ("tcp://127.0.0.1:8786", "localhost:8081", "http://[::1]:8081", "127.0.0.2"):
        assert flags.is_loopback_host(address), address
    for address in ("tcp://10.0.0.5:8786", "flink-jm:8081", "http://example.com", "[auto]"):
        assert not flags.is_loopback_host(address), address


# --- The worker image ---------------------------------------------------------------------------


def test_dockerfile_builds_a_beam_worker_with_clipcrawl_for_this_python_and_beam() -> None:
    """It cannot be built here (no registry access); its required parts are checked instead."""
    text = (REPO / "runners" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert args["BEAM_VERSION"] == apache_beam.__version__  # the image must match the submitting SDK
    assert re.search(r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\} AS (\w+)$", text, re.M)
    assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in text
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]\s*\Z', text, re.M)  # the last instruction
    assert 'pip install "apache-beam[gcp]==${BEAM_VERSION}"' in text and "pip check" in text
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.MULTILINE))
    setup = (REPO / "setup.py").read_text()
    layers = set(re.search(r"LAYERS = \(([^)]*)\)", setup).group(1).replace('"', "").replace(" ", "").split(","))
    assert layers <= copied  # every folder the package is made of
    assert "COPY setup.py README.md ./" in text  # setup.py reads README.md
    assert "torch" in setup and "torch.version.cuda" in text  # torch comes with the project; the build shows its CUDA
