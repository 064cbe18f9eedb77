"""``OpenClipModelHandler``: the Beam ``ModelHandler`` that RunInference drives.

Kept apart from ``clip_scoring`` because Beam's inference module imports torch: the CLI and
the graph-building code import ``clip_scoring`` and only pay for torch when a scoring step
is actually built.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from clipcrawl.transforms import metrics
from clipcrawl.transforms.clip_model import LoadedClip, load_clip
from clipcrawl.transforms.clip_scoring import ClipConfig, score_batch
from clipcrawl.transforms.sample import Sample


class OpenClipModelHandler(ModelHandler[Sample, PredictionResult, LoadedClip]):
    """Samples in, ``PredictionResult(sample, cosine similarity or Undecodable)`` out."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__(
            min_batch_size=config.min_batch_size,
            max_batch_size=config.max_batch_size,
            max_batch_duration_secs=config.max_batch_duration_secs,
        )
        self._config = config

    def load_model(self) -> LoadedClip:
        config = self._config
        return load_clip(config.model_name, config.pretrained, device=config.device, precision=config.precision)

    def run_inference(
        self,
        batch: Sequence[Sample],
        model: LoadedClip,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        scores = score_batch(batch, model, self._config.precision)
        return [
            PredictionResult(example=sample, inference=score, model_id=model.model_name)
            for sample, score in zip(batch, scores)
        ]

    def get_num_bytes(self, batch: Sequence[Sample]) -> int:
        """The image bytes scored; the default pickles the whole batch just to measure it."""
        return sum(len(sample.image or b"") for sample in batch)

    def get_metrics_namespace(self) -> str:
        return f"{metrics.namespace(metrics.SCORE)}.inference"
