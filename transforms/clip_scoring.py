"""The ScoreWithClip stage: CLIP image-caption similarity through Beam's RunInference.

``OpenClipModelHandler`` is a ``ModelHandler`` over ``Sample``s, so batching, one model per
worker process and the inference metrics are Beam's, not ours. Pending samples are scored and
kept (``success``) at or above the threshold, else rejected (``below_threshold``, image bytes
dropped); rows already settled go around the stage untouched. Defaults follow LAION-5B:
ViT-B-32 with OpenAI weights, threshold 0.28.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from PIL import Image

from clipcrawl.transforms import metrics
from clipcrawl.transforms.clip_model import DEVICES, TINY_MODEL_NAME, LoadedClip, cosine_similarities
from clipcrawl.transforms.routing import OnPending
from clipcrawl.transforms.sample import Sample
from clipcrawl.transforms.status import Status

if TYPE_CHECKING:
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult

PRECISIONS = ("fp32", "fp16", "bf16")
_INPUT_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Which model scores, where, in what batches, and the similarity a sample must reach."""

    model_name: str = "ViT-B-32"
    pretrained: str | None = "openai"  # open_clip tag, checkpoint path, or None
    threshold: float = 0.28
    min_batch_size: int = 1
    max_batch_size: int = 64
    max_batch_duration_secs: int | None = None  # streaming only: flush a partial batch after this
    device: str = "auto"
    precision: str = "fp32"
    # Beam accelerator resource hint on the scoring step, e.g. "type:nvidia-l4;count:1;install-nvidia-driver":
    # Dataflow right fitting then runs scoring on GPU workers and everything else on CPU workers.
    accelerator: str | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if not 1 <= self.min_batch_size <= self.max_batch_size:
            raise ValueError(
                f"need 1 <= min_batch_size ({self.min_batch_size}) <= max_batch_size ({self.max_batch_size})"
            )
        if self.max_batch_duration_secs is not None and self.max_batch_duration_secs <= 0:
            raise ValueError(f"max_batch_duration_secs must be > 0, got {self.max_batch_duration_secs}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.accelerator is not None and not self.accelerator.strip():
            raise ValueError("accelerator hint is empty; leave it out or give e.g. type:nvidia-l4;count:1")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ClipConfig":
        """From option values: None means "not given" and keeps the default.

        ``clipcrawl-tiny`` without an explicit ``pretrained`` says so (None): it has no tags and
        loads its packaged weights (``load_clip`` also does that for the ``openai`` default).
        """
        given = {name: value for name, value in kwargs.items() if value is not None}
        unknown = set(given) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown ClipConfig fields: {sorted(unknown)}")
        if given.get("model_name") == TINY_MODEL_NAME:
            given.setdefault("pretrained", None)
        return cls(**given)


@dataclasses.dataclass(frozen=True)
class Undecodable:
    """The inference result for a sample whose image bytes could not be read."""

    message: str


def decode_image(data: bytes | None) -> Image.Image:
    """The stored image bytes as an RGB picture; raises if they are not one."""
    if not data:
        raise ValueError("no image bytes")
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")  # convert() reads every pixel: truncation fails here


def apply_score(sample: Sample, score: float | Undecodable, threshold: float) -> Sample:
    """The sample kept (``success``) or rejected, with its similarity recorded."""
    if isinstance(score, Undecodable):
        return sample.reject(Status.FAILED_TO_DECODE, score.message)
    scored = dataclasses.replace(sample, similarity=score)
    if score >= threshold:
        return dataclasses.replace(scored, status=Status.SUCCESS.value, error_message=None)
    return scored.reject(Status.BELOW_THRESHOLD, f"similarity {score:.4f} < threshold {threshold:g}")


def score_batch(batch: Sequence[Sample], model: LoadedClip, precision: str = "fp32") -> list[float | Undecodable]:
    """Each sample's image-caption cosine similarity, or Undecodable for unreadable images."""
    prepared = [_prepare(sample, model) for sample in batch]
    scorable = [i for i, item in enumerate(prepared) if not isinstance(item, Undecodable)]
    scores: list[float | Undecodable] = list(prepared)  # Undecodable entries stay as they are
    if scorable:
        images = [prepared[i] for i in scorable]
        values = _similarities(model, images, [batch[i].caption for i in scorable], precision)
        for i, value in zip(scorable, values):
            scores[i] = value
    return scores


def _similarities(model: LoadedClip, images: list[Any], captions: list[str], precision: str) -> list[float]:
    import torch

    with torch.inference_mode():
        pixels = torch.stack(images).to(model.device, dtype=getattr(torch, _INPUT_DTYPES[precision]))
        tokens = model.tokenizer(captions).to(model.device)
        image_features = model.model.encode_image(pixels)
        text_features = model.model.encode_text(tokens)
        return cosine_similarities(image_features, text_features).cpu().tolist()


def _prepare(sample: Sample, model: LoadedClip) -> Any:
    """The preprocessed image tensor, or Undecodable: the one place a bad image becomes data."""
    try:
        return model.preprocess(decode_image(sample.image))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return Undecodable(f"image not decodable at scoring: {type(error).__name__}: {error}")


class _ApplyThresholdFn(beam.DoFn):
    def __init__(self, threshold: float) -> None:
        self._threshold = threshold
        self._counters = metrics.StageCounters(metrics.SCORE)

    def process(self, result: PredictionResult) -> Iterator[Sample]:
        self._counters.total.inc()
        sample = apply_score(result.example, result.inference, self._threshold)
        if sample.status == Status.SUCCESS:
            self._counters.forwarded.inc()
        else:
            self._counters.drop(sample.status)
        yield sample


class _Score(beam.PTransform):
    def __init__(self, handler: ModelHandler, threshold: float) -> None:
        super().__init__()
        self._handler = handler
        self._threshold = threshold

    def expand(self, pending: beam.PCollection) -> beam.PCollection:
        from apache_beam.ml.inference.base import RunInference  # imports torch: only when built

        return (
            pending
            | "RunInference" >> RunInference(self._handler)
            | "ApplyThreshold" >> beam.ParDo(_ApplyThresholdFn(self._threshold))
        )


class ScoreWithClip(beam.PTransform):
    """Scores pending samples with CLIP and keeps those at or above the threshold.

    ``model_handler`` replaces the open_clip handler (tests pass fakes); it must yield
    ``PredictionResult(sample, similarity)`` like ``OpenClipModelHandler``.
    """

    def __init__(self, config: ClipConfig, model_handler: ModelHandler | None = None) -> None:
        super().__init__()
        self._config = config
        if model_handler is None:
            from clipcrawl.transforms.clip_handler import OpenClipModelHandler  # imports torch

            model_handler = OpenClipModelHandler(config)
        self._handler = model_handler

    def expand(self, samples: beam.PCollection) -> beam.PCollection:
        score = _Score(self._handler, self._config.threshold)
        if self._config.accelerator:
            score = score.with_resource_hints(accelerator=self._config.accelerator)
        return samples | "ScorePending" >> OnPending(score)
