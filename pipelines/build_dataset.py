"""The dataset build: input shards -> pairs -> images -> CLIP scores -> tar + parquet per shard.

``run(argv)`` is the whole job: validate options, register the inputs with the coordinator,
take the shards not yet done, build the graph, run it, and report what the ledger says.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from clipcrawl.io.coordinator import Coordinator, mask_url
from clipcrawl.io.inputs import expand_inputs, read_manifest
from clipcrawl.io.shard_writer import WriteShards
from clipcrawl.pipelines.options import RunConfig, resolve_config
from clipcrawl.runners import direct
from clipcrawl.transforms.clip_scoring import ScoreWithClip
from clipcrawl.transforms.dedup import Dedup
from clipcrawl.transforms.download import DownloadImages
from clipcrawl.transforms.extract import READ_REPORTS, SAMPLES, SHARD_ERRORS, ExtractPairs
from clipcrawl.transforms.filters import FilterPairs

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What one invocation did, for the CLI and for tests."""

    output_dir: str
    coordinator_url: str
    shards_registered: int
    shards_processed: tuple[int, ...]
    ledger: dict


class BuildDataset(beam.PTransform):
    """``(shard_no, uri)`` shards -> one ``ShardResult`` per shard (the pipeline's only leaf)."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, shards: beam.PCollection) -> beam.PCollection:
        c = self._config
        extracted = shards | "ExtractPairs" >> ExtractPairs(c.extract)
        samples = (
            extracted[SAMPLES]
            | "FilterPairs" >> FilterPairs(c.filters)
            | "Dedup" >> Dedup(c.dedup)
            | "DownloadImages" >> DownloadImages(c.download)
            | "ScoreWithClip" >> ScoreWithClip(c.clip)
        )
        return {
            "shards": shards,
            "samples": samples,
            "errors": extracted[SHARD_ERRORS],
            "reads": extracted[READ_REPORTS],
        } | "WriteShards" >> WriteShards(c.writer)


def shard_uris(config: RunConfig) -> list[str]:
    """Every input file the options name (globs and manifests expanded)."""
    uris = expand_inputs(config.inputs) if config.inputs else []
    if config.input_manifest:
        uris += read_manifest(config.input_manifest, config.input_base_url or "")
    return list(dict.fromkeys(uris))


def with_local_defaults(argv: Sequence[str]) -> list[str]:
    """Beam arguments plus the local runner preset when no ``--runner`` was given."""
    argv = list(argv)
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in argv):
        argv = direct.preset_args(argv) + argv
    return argv


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Run the dataset build; ``test_pipeline`` lets tests inject a ``TestPipeline``."""
    options = PipelineOptions(with_local_defaults(argv or []))
    config = resolve_config(options)
    coordinator = Coordinator(config.writer.coordinator_url)
    try:
        numbers = coordinator.register(shard_uris(config))
        todo = coordinator.to_process(numbers.values(), force=config.force)
        if config.limit is not None:
            todo = todo[: config.limit]
        if todo:
            _run_pipeline(options, config, coordinator, todo, test_pipeline)
        else:
            _LOG.info("all %d shards are done; nothing to do (use --force to redo)", len(numbers))
        return RunSummary(
            output_dir=config.writer.output_dir,
            coordinator_url=mask_url(config.writer.coordinator_url),
            shards_registered=len(numbers),
            shards_processed=tuple(no for no, _ in todo),
            ledger=coordinator.summary(),
        )
    finally:
        coordinator.close()


def _run_pipeline(
    options: PipelineOptions,
    config: RunConfig,
    coordinator: Coordinator,
    todo: list[tuple[int, str]],
    test_pipeline: beam.Pipeline | None,
) -> None:
    shard_nos = [no for no, _ in todo]
    worker = f"{config.nickname}@{socket.gethostname()}"
    coordinator.start(shard_nos, worker=worker)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    _ = pipeline | "PendingShards" >> beam.Create(todo) | "BuildDataset" >> BuildDataset(config)
    try:
        pipeline.run().wait_until_finish()
    except BaseException as error:
        coordinator.fail(shard_nos, f"pipeline failed: {type(error).__name__}: {error}", only_running=True)
        raise
    # A shard the writer never reached (it should not happen) must not look like it is running.
    coordinator.fail(shard_nos, "pipeline finished without writing this shard", only_running=True)
