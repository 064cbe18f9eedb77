"""Command-line options, one ``PipelineOptions`` subclass per concern, and their validation.

Transforms never see these classes: ``resolve_config`` turns them into the plain config
dataclasses of each stage, whose constructors check bounds, before any graph is built.
Beam's own options (``--runner``, ``--direct_num_workers``, ...) pass through untouched.
"""

from __future__ import annotations

import dataclasses
import os

from apache_beam.options.pipeline_options import PipelineOptions

from clipcrawl.io.hot_folder import WatchConfig
from clipcrawl.io.leases import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS, LedgerConfig
from clipcrawl.io.shard_writer import WriterConfig
from clipcrawl.transforms.clip_model import PRECISIONS
from clipcrawl.transforms.clip_preprocess import IMAGE_DECODERS
from clipcrawl.transforms.clip_scoring import ClipConfig
from clipcrawl.transforms.clip_tags import parse_tags
from clipcrawl.transforms.dedup import DEDUP_KEYS, DEDUP_SCOPES, DedupConfig
from clipcrawl.transforms.download import DownloadConfig
from clipcrawl.transforms.extract import INPUT_FORMATS, ExtractConfig
from clipcrawl.transforms.filters import FilterConfig
from clipcrawl.transforms.image_processing import DEFAULT_QUALITY

_DOWNLOAD_DEFAULTS = DownloadConfig()
_CLIP_DEFAULTS = ClipConfig()
_FILTER_DEFAULTS = FilterConfig()


class OptionsError(ValueError):
    """A bad option value; the message names the flag and the accepted range."""


class InputOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        group = parser.add_argument_group("input")
        group.add_argument(
            "--input",
            action="append",
            default=[],
            help="Input file: path, glob or fsspec URL (s3://, gs://, https://). WAT or WARC (.gz or not), "
            "URL list (.parquet, .csv, .jsonl) or WebDataset .tar to re-score. Repeatable.",
        )
        group.add_argument("--input_format", default="auto", choices=INPUT_FORMATS,
                           help="Kind of every input; auto tells them apart by file name.")
        group.add_argument("--warc_reader", default="auto", choices=["auto", "fastwarc", "warcio"],
                           help="WAT/WARC decoding: fastwarc (fast, when installed) or warcio; auto picks fastwarc.")
        group.add_argument("--url_column", default=None,
                           help="URL-list column with the image URL (default: URL, url).")
        group.add_argument("--caption_column", default=None,
                           help="URL-list column with the caption (default: TEXT, text, caption).")
        group.add_argument("--page_url_column", default=None,
                           help="URL-list column with the page URL, if any (default: page_url, PAGE_URL).")
        group.add_argument(
            "--input_manifest",
            default=None,
            help="Common Crawl wat.paths(.gz) manifest; its paths are joined onto --input_base_url.",
        )
        group.add_argument(
            "--input_base_url",
            default=None,
            help="Root the manifest paths are relative to, e.g. s3://commoncrawl/ or a local mirror.",
        )
        group.add_argument("--limit", type=int, default=None, help="Process at most this many shards in this run.")


class FilterOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        group = parser.add_argument_group("caption and url filters")
        group.add_argument("--min_caption_chars", type=int, default=_FILTER_DEFAULTS.min_caption_chars,
                           help="Shortest caption kept, after cleanup (LAION-5B: 5).")
        group.add_argument("--max_caption_chars", type=int, default=_FILTER_DEFAULTS.max_caption_chars,
                           help="Longest caption kept (LAION-5B: 2000).")
        group.add_argument("--max_url_chars", type=int, default=_FILTER_DEFAULTS.max_url_chars,
                           help="Longest image URL kept (LAION-5B: 2000).")
        group.add_argument("--exclude_extensions", default=",".join(_FILTER_DEFAULTS.exclude_extensions),
                           help="Comma-separated image URL extensions dropped before download ('' keeps all).")
        group.add_argument("--no_language", action="store_true",
                           help="Do not detect the caption language (the language column stays empty).")
        group.add_argument("--dedup", default="url_caption", choices=DEDUP_KEYS,
                           help="What makes two candidates duplicates: same url and caption (default), same url, "
                           "or none.")
        group.add_argument("--dedup_scope", default="run", choices=DEDUP_SCOPES,
                           help="Duplicates across all shards of the run (default) or only within a shard.")


class DownloadOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        d = _DOWNLOAD_DEFAULTS
        group = parser.add_argument_group("download and resize")
        group.add_argument("--image_size", type=int, default=d.image_size, help="Target side in pixels.")
        group.add_argument("--resize_mode", default=d.resize_mode,
                           choices=["no", "keep_ratio", "center_crop", "border"],
                           help="How images are resized (img2dataset's modes).")
        group.add_argument("--resize_only_if_bigger", action="store_true", help="Never upscale.")
        group.add_argument("--encode_format", default=d.encode_format, choices=["jpg", "png", "webp"],
                           help="Format of the stored images.")
        group.add_argument("--encode_quality", type=int, default=None,
                           help="JPEG/WebP quality 0-100 (default 95); PNG compression level 0-9 (default 6).")
        group.add_argument("--min_image_size", type=int, default=d.min_image_size,
                           help="Images whose smaller side is below this are too_small.")
        group.add_argument("--max_image_pixels", type=int, default=d.max_image_pixels,
                           help="Images with more pixels are too_large (decompression-bomb guard).")
        group.add_argument("--max_image_bytes", type=int, default=d.max_bytes, help="Byte cap per download.")
        group.add_argument("--connect_timeout", type=float, default=d.connect_timeout, help="Seconds.")
        group.add_argument("--read_timeout", type=float, default=d.read_timeout, help="Seconds between bytes.")
        group.add_argument("--total_timeout", type=float, default=d.total_timeout, help="Seconds per request, all in.")
        group.add_argument("--max_redirects", type=int, default=d.max_redirects, help="Redirects followed per image.")
        group.add_argument("--download_threads", type=int, default=d.threads,
                           help="Concurrent downloads per worker process.")
        group.add_argument("--download_user_agent", default=d.user_agent,
                           help="User-Agent sent with every image request (honest, with a contact URL).")
        group.add_argument("--allow_private_addresses", action="store_true",
                           help="Allow downloads from loopback/private addresses (tests and the demo only).")
        group.add_argument("--ignore_x_robots_tag", action="store_true",
                           help="Do not honour X-Robots-Tag noai/noimageai/noml/noindex.")
        group.add_argument("--allowed_hosts", action="append", default=[],
                           help="host:port let through the address guard (tests, intranets). Repeatable.")
        group.add_argument("--ignore_robots_txt", action="store_true", help="Do not fetch or honour robots.txt.")
        group.add_argument("--ignore_tdm_reservation", action="store_true",
                           help="Do not honour TDM-Rep reservations (the tdm-reservation: 1 header and "
                           "/.well-known/tdmrep.json).")
        group.add_argument("--ignore_tdmrep_json", action="store_true",
                           help="Do not fetch or honour /.well-known/tdmrep.json (the header is still honoured).")
        group.add_argument("--robots_cache_seconds", type=float, default=d.robots_cache_seconds,
                           help="How long a robots.txt or tdmrep.json answer is used before it is fetched again "
                           "(RFC 9309: at most 24 h).")
        group.add_argument("--ca_bundle", default=d.ca_bundle,
                           help="PEM file of CAs trusted for https downloads instead of the system's "
                           "(default: REQUESTS_CA_BUNDLE when set). Must exist on every worker.")
        group.add_argument("--per_host_connections", type=int, default=d.per_host_connections,
                           help="Requests in flight per host per worker (0: unlimited).")
        group.add_argument("--per_host_rate", type=float, default=d.per_host_rate,
                           help="Requests started per second per host per worker (0: unlimited).")
        group.add_argument("--max_host_wait", type=float, default=d.max_host_wait,
                           help="Seconds a sample may wait for its host's slot before it is rate_limited.")
        group.add_argument("--max_retry_after", type=float, default=d.max_retry_after,
                           help="Longest 429/503 Retry-After waited out (once); longer ones end as rate_limited.")


class ClipOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        c = _CLIP_DEFAULTS
        group = parser.add_argument_group("CLIP scoring")
        group.add_argument("--clip_model", default=c.model_name,
                           help="open_clip model name, or clipcrawl-tiny (the bundled offline model).")
        group.add_argument("--clip_pretrained", default=c.pretrained,
                           help="open_clip pretrained tag (openai, laion2b_s34b_b79k, ...) or a checkpoint path.")
        group.add_argument("--clip_threshold", type=float, default=c.threshold,
                           help="Keep pairs whose cosine similarity is at least this (LAION-5B: 0.28).")
        group.add_argument("--clip_batch_size", type=int, default=c.max_batch_size,
                           help="RunInference batch size. On a GPU pick it with bench/clip_throughput.py (no GPU "
                           "figures yet); see README 'CLIP on GPUs'.")
        group.add_argument("--clip_min_batch_size", type=int, default=None,
                           help="Smallest batch Beam forms before a bundle ends (default: --clip_batch_size, i.e. "
                           "fixed batches; lower lets Beam's adaptive batching start small).")
        group.add_argument("--clip_max_batch_duration_secs", type=int, default=None,
                           help="Flush partial batches after this many seconds. Beam then batches through one "
                           "stateful key, which serializes batch runs: streaming or trickling input only.")
        group.add_argument("--clip_micro_batch_size", type=int, default=None,
                           help="Run each batch through the model in chunks of this size so that CPU decoding of "
                           "the next chunk overlaps the GPU (default: one pass per batch).")
        group.add_argument("--clip_device", default=c.device, help="auto (cuda when present), cpu, cuda, cuda:N.")
        group.add_argument("--clip_precision", default=c.precision, choices=list(PRECISIONS),
                           help="fp32 (exact; TF32 off), tf32 (TF32 matmuls on CUDA; fp32 on a CPU), fp16 or bf16 "
                           "(open_clip's mixed low precision: LayerNorms stay fp32), pure_fp16 or pure_bf16 (every "
                           "weight cast, LayerNorms too). Cosines are always taken in fp32. README 'CLIP "
                           "precision' lists the measured deviations and keep/drop flips.")
        group.add_argument("--clip_image_decoder", default=c.image_decoder, choices=list(IMAGE_DECODERS),
                           help="cpu: Pillow on a thread pool, equal to open_clip's preprocess; nvjpeg: JPEGs "
                           "decoded and resized on the GPU (close, not equal; CPU fallback without CUDA).")
        group.add_argument("--clip_preprocess_threads", type=int, default=None,
                           help="Decode threads per model (default: min(8, cores)).")
        group.add_argument("--clip_full_text_context", action="store_true",
                           help="Encode captions at the model's full context (77 tokens) instead of trimming to "
                           "the batch's longest caption (same scores; trimming is skipped where inexact).")
        group.add_argument("--clip_channels_last", action="store_true",
                           help="channels-last image tower (off by default; not yet measured on a GPU: check with "
                           "bench/clip_throughput.py --channels_last).")
        group.add_argument("--clip_compile", action="store_true",
                           help="torch.compile both towers (slow first batches; off by default; not yet measured on a "
                           "GPU: check with bench/clip_throughput.py --compile).")
        group.add_argument("--clip_share_model", action="store_true",
                           help="One model per machine in a model process (Beam large_model) instead of one per "
                           "SDK process: one copy in GPU memory; see README 'CLIP on GPUs'.")
        group.add_argument("--clip_tags", default=None,
                           help="Prompt tags scored from the same image features, e.g. 'unsafe;watermark' or "
                           "'name=prompt|prompt~neutral|neutral'; parquet columns tag_{name}. Heuristics.")
        group.add_argument("--save_embeddings", action="store_true",
                           help="Write {shard}_img_emb.npy and {shard}_text_emb.npy (float16, normalized) of kept "
                           "samples, rows in parquet key order.")
        group.add_argument("--preview_rate", type=float, default=c.preview_rate,
                           help="Fraction of below_threshold images that keep a 128 px JPEG in the parquet's "
                           "preview column, chosen by key (0: none, 1: all); `clipcrawl report` shows them.")
        group.add_argument("--clip_accelerator", default=None,
                           help="Beam accelerator resource hint on the scoring step, e.g. "
                           "'type:nvidia-l4;count:1;install-nvidia-driver' (Dataflow runs scoring on GPU workers).")


class OutputOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        group = parser.add_argument_group("output and coordinator")
        group.add_argument("--output", default=None, help="Output directory or fsspec URL (required).")
        group.add_argument("--samples_per_part", type=int, default=10_000, help="Samples per tar part.")
        group.add_argument(
            "--coordinator",
            default=os.environ.get("CLIPCRAWL_COORDINATOR"),
            help="SQLAlchemy URL of the shard ledger (sqlite:///path or postgresql+psycopg://user@host/db; the "
            "password from the URL, $PGPASSWORD or ~/.pgpass); default $CLIPCRAWL_COORDINATOR, else "
            "sqlite:///<output>/clipcrawl.sqlite.",
        )
        group.add_argument("--force", action="store_true", help="Redo shards that are already done.")
        group.add_argument("--nickname", default=os.environ.get("USER", "anonymous"),
                           help="Name recorded as the worker of the shards this run takes.")
        group.add_argument("--claim", type=int, default=None, metavar="N",
                           help="Volunteer mode: lease at most N shards (of the inputs given, else of every shard "
                           "registered in the ledger); 0 only registers the inputs.")
        group.add_argument("--lease_seconds", type=float, default=DEFAULT_LEASE_SECONDS,
                           help="Lease on the shards this run takes, renewed every third of it while the run lives; "
                           "a killed run's shards are claimable again once it lapses.")
        group.add_argument("--max_attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
                           help="Claims a shard gets; one that fails (or loses its lease) this often is parked as failed.")
        group.add_argument("--retry_failed", action="store_true",
                           help="Give failed shards of the inputs (parked ones included) fresh attempts.")
        group.add_argument("--watch", default=None, metavar="DIR_OR_URL",
                           help="Hot folder: register the input files that appear there and process them in "
                           "successive batch runs until stopped (Ctrl-C or SIGTERM: after the current batch).")
        group.add_argument("--watch_interval", type=float, default=30.0, help="Seconds between --watch cycles.")
        group.add_argument("--watch_settle", type=float, default=5.0,
                           help="A new file is taken once its size holds still this many seconds.")
        group.add_argument("--watch_cycles", type=int, default=0, help="Stop --watch after this many cycles (0: never).")
        group.add_argument("--progress", default="auto", choices=["auto", "on", "off"],
                           help="Live progress display on stderr for local runs (shards, pairs and rates); "
                           "auto shows it only on a terminal and not when CI is set.")


OPTION_GROUPS = (InputOptions, FilterOptions, DownloadOptions, ClipOptions, OutputOptions)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, validated, as plain values."""

    inputs: tuple[str, ...]
    input_manifest: str | None
    input_base_url: str | None
    limit: int | None
    force: bool
    nickname: str
    extract: ExtractConfig
    filters: FilterConfig
    dedup: DedupConfig
    download: DownloadConfig
    clip: ClipConfig
    writer: WriterConfig
    ledger: LedgerConfig = LedgerConfig()
    watch: WatchConfig | None = None
    progress: str = "auto"  # auto | on | off: the local runs' live display (pipelines/progress.py)


def default_coordinator_url(output: str) -> str:
    if "://" in output and not output.startswith("file://"):
        raise OptionsError(f"--output {output} is not local: give --coordinator (e.g. postgresql+psycopg://...)")
    local = os.path.abspath(output.removeprefix("file://"))
    return f"sqlite:///{os.path.join(local, 'clipcrawl.sqlite')}"


def resolve_config(options: PipelineOptions) -> RunConfig:
    """Validate every option and build the stage configs; OptionsError names the bad flag."""
    inputs = options.view_as(InputOptions)
    output = options.view_as(OutputOptions)
    if not inputs.input and not inputs.input_manifest and output.claim is None and not output.watch:
        raise OptionsError("give at least one --input (path, glob or URL), an --input_manifest, a --watch folder, "
                           "or --claim N to take shards already in the ledger")
    if output.watch and output.force:
        raise OptionsError("--force cannot be combined with --watch (every cycle would redo every shard)")
    if inputs.input_manifest and not inputs.input_base_url:
        raise OptionsError("--input_manifest needs --input_base_url (e.g. s3://commoncrawl/)")
    if inputs.limit is not None and inputs.limit < 1:
        raise OptionsError(f"--limit must be >= 1, got {inputs.limit}")
    if not output.output:
        raise OptionsError("--output is required")
    try:
        return RunConfig(
            inputs=tuple(inputs.input),
            input_manifest=inputs.input_manifest,
            input_base_url=inputs.input_base_url,
            limit=inputs.limit,
            force=output.force,
            nickname=output.nickname,
            progress=output.progress,
            extract=ExtractConfig(
                input_format=inputs.input_format,
                reader=inputs.warc_reader,
                url_column=inputs.url_column,
                caption_column=inputs.caption_column,
                page_url_column=inputs.page_url_column,
            ),
            filters=_filter_config(options.view_as(FilterOptions)),
            dedup=DedupConfig(key=options.view_as(FilterOptions).dedup,
                              scope=options.view_as(FilterOptions).dedup_scope),
            download=_download_config(options.view_as(DownloadOptions)),
            clip=_clip_config(options.view_as(ClipOptions)),
            writer=WriterConfig(
                output_dir=output.output,
                coordinator_url=output.coordinator or default_coordinator_url(output.output),
                samples_per_part=output.samples_per_part,
                **_writer_clip_fields(options.view_as(ClipOptions)),
            ),
            ledger=LedgerConfig(claim=output.claim, lease_seconds=output.lease_seconds,
                                max_attempts=output.max_attempts, retry_failed=output.retry_failed),
            watch=WatchConfig(source=output.watch, interval=output.watch_interval, settle=output.watch_settle,
                              cycles=output.watch_cycles) if output.watch else None,
        )
    except ValueError as error:
        if isinstance(error, OptionsError):
            raise
        raise OptionsError(str(error)) from error


def _filter_config(o: FilterOptions) -> FilterConfig:
    return FilterConfig(
        min_caption_chars=o.min_caption_chars,
        max_caption_chars=o.max_caption_chars,
        max_url_chars=o.max_url_chars,
        exclude_extensions=tuple(ext for ext in o.exclude_extensions.split(",") if ext.strip()),
        detect_language=not o.no_language,
    )


def _download_config(o: DownloadOptions) -> DownloadConfig:
    return DownloadConfig(
        image_size=o.image_size,
        resize_mode=o.resize_mode,
        resize_only_if_bigger=o.resize_only_if_bigger,
        encode_format=o.encode_format,
        encode_quality=DEFAULT_QUALITY[o.encode_format] if o.encode_quality is None else o.encode_quality,
        min_image_size=o.min_image_size,
        max_image_pixels=o.max_image_pixels,
        max_bytes=o.max_image_bytes,
        connect_timeout=o.connect_timeout,
        read_timeout=o.read_timeout,
        total_timeout=o.total_timeout,
        max_redirects=o.max_redirects,
        threads=o.download_threads,
        user_agent=o.download_user_agent,
        allow_private_addresses=o.allow_private_addresses,
        allowed_hosts=tuple(o.allowed_hosts),
        respect_x_robots_tag=not o.ignore_x_robots_tag,
        respect_robots_txt=not o.ignore_robots_txt,
        respect_tdm_reservation=not o.ignore_tdm_reservation,
        respect_tdmrep_json=not o.ignore_tdmrep_json,
        robots_cache_seconds=o.robots_cache_seconds,
        ca_bundle=o.ca_bundle,
        per_host_connections=o.per_host_connections,
        per_host_rate=o.per_host_rate,
        max_host_wait=o.max_host_wait,
        max_retry_after=o.max_retry_after,
    )


def _clip_config(o: ClipOptions) -> ClipConfig:
    if not -1.0 <= o.clip_threshold <= 1.0:
        raise OptionsError(f"--clip_threshold must be within [-1, 1] (a cosine), got {o.clip_threshold}")
    return ClipConfig.from_kwargs(
        model_name=o.clip_model,
        pretrained=o.clip_pretrained,
        threshold=o.clip_threshold,
        max_batch_size=o.clip_batch_size,
        device=o.clip_device,
        precision=o.clip_precision,
        accelerator=o.clip_accelerator,
        preview_rate=o.preview_rate,
        min_batch_size=o.clip_min_batch_size,
        max_batch_duration_secs=o.clip_max_batch_duration_secs,
        micro_batch_size=o.clip_micro_batch_size,
        image_decoder=o.clip_image_decoder,
        preprocess_threads=o.clip_preprocess_threads,
        trim_text=not o.clip_full_text_context,
        channels_last=o.clip_channels_last,
        compile=o.clip_compile,
        share_model=o.clip_share_model,
        save_embeddings=o.save_embeddings,
        tags=parse_tags(o.clip_tags),
    )


def _writer_clip_fields(o: ClipOptions) -> dict:
    """What the shard writer needs to know of the scoring options: tag columns, embedding files."""
    return {"tag_names": tuple(spec.name for spec in parse_tags(o.clip_tags)), "save_embeddings": o.save_embeddings}
