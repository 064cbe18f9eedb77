"""The whole clipcrawl graph built for Dataflow with ``--dry_run=True``: offline, nothing submitted.

Beam's DataflowRunner goes through everything but the submission: overrides, the portable
pipeline proto with its environments, staging (the sdist built from ``--setup_file``) and
the job description. Only the scoring step may ask for a GPU (right fitting); everything
else stays on ordinary workers.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from clipcrawl.pipelines.build_dataset import BuildDataset, with_local_defaults
from clipcrawl.pipelines.options import resolve_config
from clipcrawl.runners import dataflow

ACCELERATOR_URN = "beam:resources:accelerator:v1"
SCORING = "BuildDataset/ScoreWithClip/ScorePending/Process/"
INPUT = "gs://clipcrawl-test/in/CC-MAIN-x.warc.wat.gz"
ARGS = [
    "--preset=dataflow",
    "--project=clipcrawl-test", "--region=us-central1", "--temp_location=gs://clipcrawl-test/tmp",
    "--dry_run=True",
    f"--input={INPUT}", "--output=gs://clipcrawl-test/out",
    "--coordinator=postgresql+psycopg://crawler@ledger.internal/clipcrawl",
    "--clip_model=clipcrawl-tiny",
]


def dry_run(argv: list[str]) -> tuple[beam_runner_api_pb2.Pipeline, PipelineOptions]:
    options = PipelineOptions(with_local_defaults(argv))
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "PendingShards" >> beam.Create([(0, INPUT)]) | "BuildDataset" >> BuildDataset(resolve_config(options))
    result = pipeline.run()
    assert result.state == "DONE"  # a dry run "finishes" at once
    for environment in result.job.proto_pipeline.components.environments.values():
        _STAGING_DIRS.update(os.path.dirname(path) for path in artifacts(environment).values())
    return result.job.proto_pipeline, result.job.options


def artifacts(environment: beam_runner_api_pb2.Environment) -> dict[str, str]:
    """staged name -> local path of every file the job would upload."""
    found = {}
    for artifact in environment.dependencies:
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
        found[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
    return found


_STAGING_DIRS: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def remove_staging_dirs():
    """Beam leaves each dry run's staging files (pickled session, sdist) in a temporary directory."""
    yield
    for staging in _STAGING_DIRS:
        if staging.startswith(tempfile.gettempdir() + os.sep):
            shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="module")
def job() -> tuple[beam_runner_api_pb2.Pipeline, PipelineOptions]:
    return dry_run(ARGS)


def test_only_the_scoring_step_carries_the_accelerator_hint(job) -> None:
    proto, _ = job
    environments = proto.components.environments
    hinted, plain = set(), set()
    for transform in proto.components.transforms.values():
        if transform.subtransforms or not transform.environment_id:
            continue  # composites, and primitives the service runs itself (GroupByKey, Flatten, Impulse)
        hints = environments[transform.environment_id].resource_hints
        (hinted if ACCELERATOR_URN in hints else plain).add(transform.unique_name)
        if ACCELERATOR_URN in hints:
            assert hints[ACCELERATOR_URN].decode() == dataflow.DEFAULT_ACCELERATOR
    assert any("RunInference" in name for name in hinted)
    assert hinted and all(name.startswith(SCORING) for name in hinted), sorted(hinted)
    # Reading, extraction, downloads and the writer stay on CPU workers.
    for stage in ("ExtractPairs", "DownloadImages", "WriteShards"):
        assert any(f"BuildDataset/{stage}/" in name for name in plain), stage
    assert not any(name.startswith(SCORING) for name in plain)
    assert len({transform.environment_id for transform in proto.components.transforms.values()
                if transform.unique_name in hinted}) == 1


def test_the_job_stages_clipcrawl_from_setup_py_on_runner_v2(job) -> None:
    proto, options = job
    assert options.get_all_options()["setup_file"] == dataflow.repo_setup_file()
    assert "use_runner_v2" in options.get_all_options()["experiments"]
    assert not any("worker_accelerator" in option for option in options.get_all_options()["dataflow_service_options"] or [])
    staged = artifacts(proto.components.environments[next(
        t.environment_id for t in proto.components.transforms.values() if t.unique_name.endswith("WriteAndCommit"))])
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:  # the sdist Beam built from --setup_file
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"setup.py", "io/shard_writer.py", "transforms/clip_scoring.py", "pipelines/build_dataset.py",
            "runners/dataflow.py", "transforms/assets/clipcrawl-tiny.pt"} <= names


def test_a_custom_container_replaces_staging() -> None:
    image = "us-central1-docker.pkg.dev/clipcrawl-test/images/clipcrawl:cuda"
    proto, options = dry_run(ARGS + [f"--sdk_container_image={image}", "--clip_accelerator=type:nvidia-tesla-t4;count:2"])
    assert not options.get_all_options()["setup_file"]
    images, hints = set(), set()
    for environment in proto.components.environments.values():
        images.add(beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image)
        hints.add(environment.resource_hints.get(ACCELERATOR_URN, b"").decode())
        assert "workflow.tar.gz" not in artifacts(environment)
    assert images == {image}
    assert hints == {"", "type:nvidia-tesla-t4;count:2"}  # the user's hint wins over the preset's
