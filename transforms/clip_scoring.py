"""The ScoreWithClip stage: CLIP image-caption similarity through Beam's RunInference.

``OpenClipModelHandler`` is a ``ModelHandler`` over ``Sample``s, so batching, one model per
worker process and the inference metrics are Beam's, not ours. Pending samples are scored and
kept (``success``) at or above the threshold, else rejected (``below_threshold``, image bytes
dropped); rows already settled go around the stage untouched. Defaults follow LAION-5B:
ViT-B-32 with OpenAI weights, threshold 0.28.

Besides the similarity the scorer can return, from the same forward pass, prompt-tag scores
(``clip_tags``: every scored row) and the normalized float16 image and text embeddings
(kept rows only, for the shard's ``.npy`` files).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import apache_beam as beam

from clipcrawl.transforms import metrics
from clipcrawl.transforms.clip_model import DEVICES, PRECISIONS, TINY_MODEL_NAME
from clipcrawl.transforms.clip_preprocess import IMAGE_DECODERS
from clipcrawl.transforms.clip_tags import TagSpec, parse_tags
from clipcrawl.transforms.previews import DEFAULT_PREVIEW_RATE, make_preview, wants_preview
from clipcrawl.transforms.routing import OnPending
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status

if TYPE_CHECKING:
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Which model scores, where, in what batches, and the similarity a sample must reach."""

    model_name: str = "ViT-B-32"
    pretrained: str | None = "openai"  # open_clip tag, checkpoint path, or None
    threshold: float = 0.28
    # RunInference batches. min_batch_size None means max_batch_size: a GPU wants full batches,
    # not Beam's adaptive sizes that start at 1; a bundle's last batch may still be smaller.
    min_batch_size: int | None = None
    max_batch_size: int = 256
    # Flush a partial batch after this long. Beam then batches with state under one shared key,
    # which serializes batch runs: for streaming or trickling input only.
    max_batch_duration_secs: int | None = None
    # Forward passes per RunInference batch in chunks of this many (None: one pass) so that CPU
    # threads decode chunk k+1 while the GPU runs chunk k; text goes in length-sorted chunks.
    micro_batch_size: int | None = None
    device: str = "auto"
    # fp32 (exact), tf32, fp16/bf16 (mixed: LayerNorms fp32), pure_fp16/pure_bf16 (all cast); README "CLIP precision".
    precision: str = "fp32"
    image_decoder: str = "cpu"  # cpu: Pillow on threads, exact; nvjpeg: torchvision on the GPU, close
    preprocess_threads: int = 0  # 0: min(8, cores)
    trim_text: bool = True  # encode text only up to the batch's longest caption where exact
    channels_last: bool = False
    compile: bool = False  # torch.compile the towers (first batches slow; measure first)
    # One model per machine in a separate process instead of one per SDK process (Beam's
    # large_model): batches are pickled to it. See README "CLIP on GPUs".
    share_model: bool = False
    save_embeddings: bool = False  # kept rows carry float16 normalized features -> per-shard .npy
    tags: tuple[TagSpec, ...] = ()  # prompt tags, see clip_tags
    # Beam accelerator resource hint on the scoring step, e.g. "type:nvidia-l4;count:1;install-nvidia-driver":
    # Dataflow right fitting then runs scoring on GPU workers and everything else on CPU workers.
    accelerator: str | None = None
    # Fraction of below_threshold rows that keep a small JPEG in the parquet's preview column.
    preview_rate: float = DEFAULT_PREVIEW_RATE

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if not 1 <= self.batch_floor <= self.max_batch_size:
            raise ValueError(
                f"need 1 <= min_batch_size ({self.min_batch_size}) <= max_batch_size ({self.max_batch_size})"
            )
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if self.image_decoder not in IMAGE_DECODERS:
            raise ValueError(f"image_decoder must be one of {IMAGE_DECODERS}, got {self.image_decoder!r}")
        if self.preprocess_threads < 0:
            raise ValueError(f"preprocess_threads must be >= 0, got {self.preprocess_threads}")
        if self.max_batch_duration_secs is not None and self.max_batch_duration_secs <= 0:
            raise ValueError(f"max_batch_duration_secs must be > 0, got {self.max_batch_duration_secs}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.preview_rate <= 1.0:
            raise ValueError(f"preview_rate is a fraction in [0, 1], got {self.preview_rate}")
        if self.accelerator is not None and not self.accelerator.strip():
            raise ValueError("accelerator hint is empty; leave it out or give e.g. type:nvidia-l4;count:1")

    @property
    def batch_floor(self) -> int:
        """The smallest batch RunInference forms (before a bundle's end)."""
        return self.max_batch_size if self.min_batch_size is None else self.min_batch_size

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.tags)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ClipConfig":
        """From option values: None means "not given" and keeps the default.

        ``clipcrawl-tiny`` without an explicit ``pretrained`` says so (None): it has no tags and
        loads its packaged weights (``load_clip`` also does that for the ``openai`` default).
        ``tags`` may be the ``--clip_tags`` string.
        """
        given = {name: value for name, value in kwargs.items() if value is not None}
        unknown = set(given) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown ClipConfig fields: {sorted(unknown)}")
        if isinstance(given.get("tags"), str):
            given["tags"] = parse_tags(given["tags"])
        if given.get("model_name") == TINY_MODEL_NAME:
            given.setdefault("pretrained", None)
        return cls(**given)


@dataclasses.dataclass(frozen=True)
class Undecodable:
    """The inference result for a sample whose image bytes could not be read."""

    message: str


@dataclasses.dataclass(frozen=True)
class ClipScore:
    """The inference result for a scored sample (picklable: it may come from a model process)."""

    similarity: float
    tags: dict[str, float] | None = None
    image_embedding: bytes | None = dataclasses.field(default=None, repr=False)  # float16, L2-normalized
    text_embedding: bytes | None = dataclasses.field(default=None, repr=False)


def apply_score(sample: Sample, score: float | Undecodable, threshold: float, preview_rate: float = 0.0) -> Sample:
    """The sample kept (``success``) or rejected, with its similarity recorded.

    A rejected image loses its bytes; ``preview_rate`` of them (chosen by key) keep a thumbnail.
    """
    return dataclasses.replace(sample, **_decision(sample, score, threshold, preview_rate))


def apply_clip_score(
    sample: Sample, score: ClipScore | float | Undecodable, threshold: float, preview_rate: float = 0.0
) -> Sample:
    """``apply_score`` plus the rest of a ``ClipScore``: tags on every scored row, embeddings on
    kept rows only (the shard's .npy files hold kept samples; rejected rows need not carry them)."""
    if not isinstance(score, ClipScore):
        return apply_score(sample, score, threshold, preview_rate)
    changes = _decision(sample, score.similarity, threshold, preview_rate)
    changes["tags"] = score.tags
    if changes["status"] == Status.SUCCESS.value:
        changes.update(image_embedding=score.image_embedding, text_embedding=score.text_embedding)
    # One replace per row: on a GPU worker this runs for every pair, at tens of thousands a second.
    return dataclasses.replace(sample, **changes)


def _decision(sample: Sample, score: float | Undecodable, threshold: float, preview_rate: float) -> dict[str, Any]:
    """The fields the score changes (what ``Sample.reject`` would change, for a rejection)."""
    if isinstance(score, Undecodable):
        return {"status": Status.FAILED_TO_DECODE.value, "error_message": score.message, "image": None}
    if score >= threshold:
        return {"similarity": score, "status": Status.SUCCESS.value, "error_message": None}
    preview = make_preview(sample.image) if wants_preview(sample.key, preview_rate) else None
    return {
        "similarity": score, "status": Status.BELOW_THRESHOLD.value, "image": None, "preview": preview,
        "error_message": f"similarity {score:.4f} < threshold {threshold:g}",
    }


class _ApplyThresholdFn(beam.DoFn):
    def __init__(self, threshold: float, preview_rate: float = 0.0) -> None:
        self._threshold = threshold
        self._preview_rate = preview_rate
        self._counters = metrics.StageCounters(metrics.SCORE)

    def process(self, result: PredictionResult) -> Iterator[Sample]:
        self._counters.total.inc()
        sample = apply_clip_score(result.example, result.inference, self._threshold, self._preview_rate)
        if sample.status == Status.SUCCESS:
            self._counters.forwarded.inc()
        else:
            self._counters.drop(sample.status)
        yield sample


class ScoreStage(beam.PTransform):
    """RunInference then the threshold: the part that needs the model (and carries the hint).

    Pending samples only; ``ScoreWithClip`` routes the others around it.
    """

    def __init__(self, handler: ModelHandler, threshold: float, preview_rate: float = 0.0) -> None:
        super().__init__()
        self._handler = handler
        self._threshold = threshold
        self._preview_rate = preview_rate

    def expand(self, pending: beam.PCollection) -> beam.PCollection:
        from apache_beam.ml.inference.base import RunInference  # imports torch: only when built

        return (
            pending
            | "RunInference" >> RunInference(self._handler)
            | "ApplyThreshold" >> beam.ParDo(_ApplyThresholdFn(self._threshold, self._preview_rate))
        )


class ScoreWithClip(beam.PTransform):
    """Scores pending samples with CLIP and keeps those at or above the threshold.

    ``model_handler`` replaces the open_clip handler (tests and benchmarks pass their own); it
    must yield ``PredictionResult(sample, ClipScore | similarity | Undecodable)``.
    """

    def __init__(self, config: ClipConfig, model_handler: ModelHandler | None = None) -> None:
        super().__init__()
        self._config = config
        if model_handler is None:
            from clipcrawl.transforms.clip_handler import OpenClipModelHandler  # imports torch

            model_handler = OpenClipModelHandler(config)
        self._handler = model_handler

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        score = ScoreStage(self._handler, self._config.threshold, self._config.preview_rate)
        if self._config.accelerator:
            score = score.with_resource_hints(accelerator=self._config.accelerator)
        return samples | "ScorePending" >> OnPending(score)
