"""The Beam half of bench/clip_throughput.py: the scoring stage on the in-process FnApiRunner.

Lives in its own module so that Beam pickles these DoFns by reference: the warmed-up scorer,
the pairs and the clock readings stay in this module's dictionaries instead of being pickled
into the pipeline (the in-process runner unpickles in this same process).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from clipcrawl.transforms.clip_handler import ClipScorer, OpenClipModelHandler
from clipcrawl.transforms.clip_scoring import ClipConfig, ScoreStage
from clipcrawl.transforms.sample import Sample, sample_key

SCORERS: dict[str, ClipScorer] = {}
SAMPLES: dict[str, list[Sample]] = {}
CLOCK: dict[str, float] = {}
SCORED: dict[str, int] = {}


class PreloadedHandler(OpenClipModelHandler):
    """The product's handler, except that ``load_model`` hands over an already warmed scorer."""

    def __init__(self, config: ClipConfig, scorer_id: str) -> None:
        super().__init__(config)
        self._scorer_id = scorer_id

    def load_model(self) -> ClipScorer:
        return SCORERS[self._scorer_id]


class EmitPairs(beam.DoFn):
    """One element in, the run's pending ``Sample``s out (made before the clock starts, as an
    upstream stage would hand them over); notes when the first left."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def process(self, count: int) -> Iterator[Sample]:
        samples = SAMPLES[self._run_id]
        CLOCK[f"{self._run_id}/first"] = time.perf_counter()
        yield from samples[:count]


class MarkScored(beam.DoFn):
    """Counts scored samples and keeps the time the last one arrived."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def process(self, sample: Sample) -> Iterator[None]:
        CLOCK[f"{self._run_id}/last"] = time.perf_counter()
        SCORED[self._run_id] = SCORED.get(self._run_id, 0) + 1
        if sample.similarity is None:
            raise RuntimeError(f"sample {sample.key} left the stage unscored: {sample.error_message}")
        return iter(())


def run_stage(scorer: ClipScorer, images: Sequence[bytes], captions: Sequence[str], batch_size: int) -> dict[str, Any]:
    """Seconds from the first sample emitted to the last scored, and the whole pipeline's wall."""
    run_id = f"run{len(CLOCK)}-{batch_size}"
    SCORERS[run_id] = scorer
    SAMPLES[run_id] = [
        Sample(key=sample_key(0, ordinal), shard_no=0, url=f"http://bench.invalid/{ordinal}.jpg", caption=caption,
               page_url=None, source="bench", image=image, image_format="jpeg")
        for ordinal, (image, caption) in enumerate(zip(images, captions))
    ]
    config = ClipConfig(
        model_name=scorer.config.model_name, pretrained=scorer.config.pretrained, device=scorer.config.device,
        precision=scorer.config.precision, image_decoder=scorer.config.image_decoder,
        max_batch_size=batch_size, threshold=scorer.config.threshold,
    )
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    started = time.perf_counter()
    with beam.Pipeline(options=options) as pipeline:
        (
            pipeline
            | "One" >> beam.Create([len(images)])
            | "Emit" >> beam.ParDo(EmitPairs(run_id))
            | "Score" >> ScoreStage(PreloadedHandler(config, run_id), config.threshold, config.preview_rate)
            | "Mark" >> beam.ParDo(MarkScored(run_id))
        )
    wall = time.perf_counter() - started
    scored = SCORED.pop(run_id, 0)
    if scored != len(images):
        raise RuntimeError(f"Beam stage scored {scored} of {len(images)} pairs")
    SCORERS.pop(run_id)
    SAMPLES.pop(run_id)
    return {"seconds": CLOCK[f"{run_id}/last"] - CLOCK[f"{run_id}/first"], "pipeline_wall": wall}
