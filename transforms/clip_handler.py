"""``OpenClipModelHandler``: the Beam ``ModelHandler`` that RunInference drives, and the
``ClipScorer`` it loads (once per process, shared by that process's threads).

Kept apart from ``clip_scoring`` because Beam's inference module imports torch: the CLI and
the graph-building code import ``clip_scoring`` and only pay for torch when a scoring step
is actually built.

The scorer takes plain image bytes and captions, so with ``share_model`` (Beam's
``large_model``: one model process per machine) only those cross the process boundary, and
decoding happens next to the model. Within a batch it keeps the GPU fed: a prefetch thread
decodes chunk k+1 (on the decode pool) and tokenizes while chunk k's forward pass runs, and
nothing waits for the GPU until the batch's results are copied back once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from clipcrawl.io import faults
from clipcrawl.transforms import metrics
from clipcrawl.transforms.clip_model import LoadedClip, encode_text, load_clip
from clipcrawl.transforms.clip_preprocess import ImagePreparer
from clipcrawl.transforms.clip_scoring import ClipConfig, ClipScore, Undecodable
from clipcrawl.transforms.clip_tags import TagBank, scores_as_dicts
from clipcrawl.transforms.sample import Sample

if TYPE_CHECKING:
    import torch


class ClipScorer:
    """One loaded model with its image preparer and tag prompts; ``score`` is thread-safe."""

    def __init__(self, config: ClipConfig) -> None:
        self.config = config
        self.clip: LoadedClip = load_clip(
            config.model_name,
            config.pretrained,
            device=config.device,
            precision=config.precision,
            trim_text=config.trim_text,
            channels_last=config.channels_last,
            compile_model=config.compile,
        )
        self.images = ImagePreparer(self.clip.preprocess, self.clip.device, config.preprocess_threads,
                                    config.image_decoder)
        self.tags = TagBank(self.clip, config.tags) if config.tags else None
        self._prefetch = ThreadPoolExecutor(4, thread_name_prefix="clip-prefetch")

    def score(self, images: Sequence[bytes | None], captions: Sequence[str]) -> list[ClipScore | Undecodable]:
        """Per input: its similarity (+ tags, embeddings as configured), or why its image failed."""
        import torch
        import torch.nn.functional as F

        count = len(images)
        if count != len(captions):
            raise ValueError(f"{count} images but {len(captions)} captions")
        if count == 0:
            return []
        step = self.config.micro_batch_size or count
        starts = list(range(0, count, step))
        tokens_future = self._prefetch.submit(self.clip.tokenizer, list(captions))
        upcoming = self._prefetch.submit(self.images.prepare, images[0:step])
        errors: dict[int, str] = {}
        ok: list[int] = []
        image_parts = []
        with torch.inference_mode():
            for k, start in enumerate(starts):
                prepared = upcoming.result()
                if k + 1 < len(starts):
                    upcoming = self._prefetch.submit(self.images.prepare, images[start + step : start + 2 * step])
                errors.update({start + i: message for i, message in prepared.errors.items()})
                if prepared.ok:
                    pixels = self.images.to_model_input(prepared, self.clip.input_dtype, self.config.channels_last)
                    image_parts.append(F.normalize(self.clip.model.encode_image(pixels).float(), dim=-1))
                    ok += [start + i for i in prepared.ok]
            tokens = tokens_future.result()
            if not ok:
                return [Undecodable(errors[i]) for i in range(count)]
            # Rows in ``ok`` order (nvjpeg may reorder within a chunk); captions in the same order.
            image_features = torch.cat(image_parts)
            text_features = self._encode_texts(tokens[torch.tensor(ok)], step)
            similarities = (image_features * text_features).sum(dim=-1)
            extras = self._extras(image_features, text_features)
            values = similarities.cpu().tolist()  # the one wait for the GPU
        tags = scores_as_dicts(self.tags.names, extras["tags"].cpu()) if "tags" in extras else None
        image_rows = extras["image"].cpu().numpy() if "image" in extras else None
        text_rows = extras["text"].cpu().numpy() if "text" in extras else None
        results: list[ClipScore | Undecodable] = [Undecodable(errors[i]) if i in errors else None for i in range(count)]
        for row, position in enumerate(ok):
            results[position] = ClipScore(
                similarity=values[row],
                tags=None if tags is None else tags[row],
                image_embedding=None if image_rows is None else image_rows[row].tobytes(),
                text_embedding=None if text_rows is None else text_rows[row].tobytes(),
            )
        return results

    def _encode_texts(self, tokens: "torch.Tensor", step: int) -> "torch.Tensor":
        """Normalized float32 text features in input order, encoded in chunks of similar length."""
        import torch
        import torch.nn.functional as F

        lengths = tokens.argmax(dim=-1)  # the EOT position: the longest id
        order = torch.argsort(lengths, stable=True) if self.clip.trim_text else torch.arange(len(tokens))
        features = None
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            chunk = tokens[rows].to(self.clip.device, non_blocking=True)
            encoded = F.normalize(encode_text(self.clip, chunk).float(), dim=-1)
            if features is None:
                features = torch.empty((len(tokens), encoded.shape[-1]), device=encoded.device)
            features[rows.to(encoded.device)] = encoded
        return features

    def _extras(self, image_features: "torch.Tensor", text_features: "torch.Tensor") -> dict[str, Any]:
        import torch

        extras: dict[str, Any] = {}
        if self.tags is not None:
            extras["tags"] = self.tags.scores(image_features)
        if self.config.save_embeddings:
            extras["image"] = image_features.to(torch.float16)
            extras["text"] = text_features.to(torch.float16)
        return extras


class OpenClipModelHandler(ModelHandler[Sample, PredictionResult, ClipScorer]):
    """Samples in, ``PredictionResult(sample, ClipScore or Undecodable)`` out.

    One model per SDK process (RunInference's default, shared by the process's threads), or
    with ``share_model`` one per machine in a model process (Beam's ``large_model``).
    """

    def __init__(self, config: ClipConfig) -> None:
        super().__init__(
            min_batch_size=config.batch_floor,
            max_batch_size=config.max_batch_size,
            max_batch_duration_secs=config.max_batch_duration_secs,
            large_model=config.share_model,
        )
        self._config = config

    def load_model(self) -> ClipScorer:
        return ClipScorer(self._config)

    def run_inference(
        self,
        batch: Sequence[Sample],
        model: ClipScorer,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        faults.point("score.batch_before")
        scores = model.score([sample.image for sample in batch], [sample.caption for sample in batch])
        faults.point("score.batch_after")
        return [
            PredictionResult(example=sample, inference=score, model_id=self._config.model_name)
            for sample, score in zip(batch, scores)
        ]

    def get_num_bytes(self, batch: Sequence[Sample]) -> int:
        """The image bytes scored; the default pickles the whole batch just to measure it."""
        return sum(len(sample.image or b"") for sample in batch)

    def get_metrics_namespace(self) -> str:
        return f"{metrics.namespace(metrics.SCORE)}.inference"
