"""The dataset build: input shards -> pairs -> images -> CLIP scores -> tar + parquet per shard.

``run(argv)`` is the whole job: validate options, register the inputs with the coordinator,
lease the shards not yet done, build the graph, run it, and report what the ledger says.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from clipcrawl.io import faults
from clipcrawl.io.coordinator import FAILED, RUNNING, Coordinator, mask_url
from clipcrawl.io.inputs import expand_inputs, read_manifest
from clipcrawl.io.leases import Heartbeat, Lease, WorkerExit, WorkerWatch
from clipcrawl.io.shard_writer import WriteShards
from clipcrawl.pipelines.options import RunConfig, resolve_config
from clipcrawl.pipelines.progress import run_with_progress
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
    shards_skipped: tuple[int, ...] = ()  # leased to another live run, or parked after max attempts
    lease_owner: str = ""  # this run's lease token in the ledger


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
    """Beam arguments with the runner preset applied (``runners/presets.py``).

    ``--preset=NAME`` (direct, dataflow, flink, dask) adds that preset's defaults; without it,
    the local ``direct`` preset applies unless ``--runner`` was given. The user's flags win.
    """
    from clipcrawl.runners import presets  # dask/flink/dataflow presets: only option lists, cheap

    name, argv = presets.pop_preset(argv)
    if name is not None:
        return presets.preset_args(name, argv) + argv
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in argv):
        argv = direct.preset_args(argv) + argv
    return argv


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Run the dataset build; ``test_pipeline`` lets tests inject a ``TestPipeline``."""
    options = PipelineOptions(with_local_defaults(argv or []))
    config = resolve_config(options)
    # No inputs (``--claim N`` alone): take from every shard already registered in the ledger.
    return run_batch(options, config, shard_uris(config) or None, test_pipeline)


def run_batch(
    options: PipelineOptions,
    config: RunConfig,
    uris: Sequence[str] | None,
    test_pipeline: beam.Pipeline | None = None,
) -> RunSummary:
    """Register ``uris``, lease the shards to do (of them, or of the whole ledger), run, report.

    Every run leases what it takes, so two runs over the same inputs never process one
    shard twice; a heartbeat renews the leases while the pipeline runs (``io/leases.py``).
    """
    coordinator = Coordinator(config.writer.coordinator_url)
    lease = Lease.for_run(config.nickname, config.ledger.lease_seconds)
    try:
        numbers = coordinator.register(uris) if uris is not None else {}
        scope = list(numbers.values()) if uris is not None else None
        if config.ledger.retry_failed:
            coordinator.reset_failed(scope)
        todo = coordinator.claim(lease, limit=_claim_limit(config), shard_nos=scope,
                                 max_attempts=config.ledger.max_attempts, force=config.force)
        faults.point("run.after_claim")
        skipped = _log_skipped(coordinator, config, scope, todo) if config.ledger.claim is None else ()
        if todo:
            _LOG.info("%s leased %d shard(s) on %s", lease.worker, len(todo), mask_url(coordinator.url))
            with Heartbeat(coordinator, lease) as heartbeat:  # from the claim on: building the graph takes time
                _run_pipeline(options, config, coordinator, todo, test_pipeline, lease, heartbeat)
        else:
            _LOG.info("no shard to do among %s (done ones are skipped; --force redoes them)",
                      f"{len(numbers)} input(s)" if scope is not None else "the ledger")
        return RunSummary(
            output_dir=config.writer.output_dir,
            coordinator_url=mask_url(config.writer.coordinator_url),
            shards_registered=len(numbers),
            shards_processed=tuple(no for no, _ in todo),
            ledger=coordinator.summary(),
            shards_skipped=skipped,
            lease_owner=lease.owner,
        )
    finally:
        coordinator.close()


def _claim_limit(config: RunConfig) -> int | None:
    limits = [value for value in (config.limit, config.ledger.claim) if value is not None]
    return min(limits) if limits else None


def _log_skipped(
    coordinator: Coordinator, config: RunConfig, scope: list[int] | None, todo: list[tuple[int, str]]
) -> tuple[int, ...]:
    """Say why shards of the inputs were not taken: another run's live lease, or parked."""
    if scope is None:
        return ()
    taken = {no for no, _ in todo}
    skipped = []
    for row in coordinator.shards(set(scope) - taken, statuses=(RUNNING, FAILED)):
        if row["status"] == RUNNING:
            _LOG.warning("shard %06d (%s) is leased to %s until %s: skipped", row["shard_no"], row["uri"],
                         row["worker"], row["lease_expires_at"])
        elif row["status"] == FAILED and row["attempts"] >= config.ledger.max_attempts and not config.force:
            _LOG.warning("shard %06d (%s) is parked after %d failed attempts (%s): skipped; --retry_failed "
                         "gives it new attempts", row["shard_no"], row["uri"], row["attempts"], row["error"])
        else:
            continue
        skipped.append(row["shard_no"])
    return tuple(skipped)


def _run_pipeline(
    options: PipelineOptions,
    config: RunConfig,
    coordinator: Coordinator,
    todo: list[tuple[int, str]],
    test_pipeline: beam.Pipeline | None,
    lease: Lease,
    heartbeat: Heartbeat,
) -> None:
    """Run the graph over the leased shards (``heartbeat`` renews their leases meanwhile).

    However the pipeline ends, no shard of this run stays ``running`` under its lease:
    Ctrl-C releases them, an error or a dead worker process fails them (attempt counted).
    """
    shard_nos = [no for no, _ in todo]
    # The writer marks a shard only while this lease holds it (io/shard_writer.py).
    writer = dataclasses.replace(config.writer, lease_owner=lease.owner, lease_seconds=lease.seconds)
    config = dataclasses.replace(config, writer=writer)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    _ = pipeline | "PendingShards" >> beam.Create(todo) | "BuildDataset" >> BuildDataset(config)
    faults.point("run.before_pipeline")
    try:
        with WorkerWatch(lambda death: _after_worker_death(coordinator, lease, heartbeat, shard_nos, death)):
            run_with_progress(pipeline, config.progress, shards=len(todo))  # live display on a terminal
    except (KeyboardInterrupt, SystemExit) as stop:
        # Stopped on purpose (Ctrl-C, a second SIGTERM in --watch): give the shards back at once.
        released = coordinator.release(lease, f"run of {lease.worker} stopped ({type(stop).__name__}); released")
        _LOG.warning("stopped: %d unfinished shard(s) released to pending", released)
        raise
    except BaseException as error:
        message = coordinator.mask(f"pipeline failed: {type(error).__name__}: {error}")
        coordinator.fail(shard_nos, message, only_running=True, owner=lease.owner)
        raise
    faults.point("run.after_pipeline")
    # A shard the writer never reached (it should not happen) must not look like it is running.
    coordinator.fail(shard_nos, "pipeline finished without writing this shard", only_running=True, owner=lease.owner)


def _after_worker_death(
    coordinator: Coordinator, lease: Lease, heartbeat: Heartbeat, shard_nos: list[int], death: WorkerExit
) -> None:
    """A Beam worker process died: stop renewing, make this run's unfinished shards claimable now.

    Runs in Beam's thread, before the main thread is woken, so the ledger is right even if
    the launcher never gets out of the runner. A worker stopped by SIGINT/SIGTERM (Ctrl-C
    reaches the whole process group) gives the shards back as Ctrl-C does; any other death
    (the OOM killer's SIGKILL, a crash) counts the attempt, so a shard that kills its worker
    every time is parked after ``--max_attempts`` instead of felling every run that takes it.
    """
    heartbeat.stop()
    reason = f"{death.describe()}; run of {lease.worker} stopped"
    try:
        if death.stopped:
            count, outcome = coordinator.release(lease, reason), "released to pending"
        else:
            count = coordinator.fail(shard_nos, reason, only_running=True, owner=lease.owner)
            outcome = "marked failed (claimable again while attempts are left)"
    except Exception as error:
        _LOG.error("could not give the shards back (their leases lapse in %gs): %s", lease.seconds,
                   coordinator.mask(str(error)))
        raise
    _LOG.error("%s: %d unfinished shard(s) %s", reason, count, outcome)
