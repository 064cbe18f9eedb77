"""ScoreWithClip and its open_clip ModelHandler, with the packaged tiny model and real pictures."""

from __future__ import annotations

import dataclasses
import importlib.resources
import io
import math
import random
import re
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import open_clip
import pytest
import torch
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that
from PIL import Image

from clipcrawl.pipelines import synthetic_images
from clipcrawl.transforms import metrics
from clipcrawl.transforms.clip_handler import ClipScorer, OpenClipModelHandler
from clipcrawl.transforms.clip_model import TINY_CHECKPOINT_FILE, TINY_MODEL_NAME
from clipcrawl.transforms.clip_scoring import ClipConfig, ClipScore, ScoreWithClip, Undecodable, apply_score
from clipcrawl.transforms.sample import Sample, sample_key
from clipcrawl.transforms.status import Status
from tests.conftest import beam_options

SEED = 9090  # neither the training seed nor its evaluation seed
TINY = ClipConfig.from_kwargs(model_name=TINY_MODEL_NAME, device="cpu", max_batch_size=8)


def encoded(image: Image.Image, image_format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def sample(ordinal: int, caption: str, image: bytes | None, status: Status = Status.PENDING) -> Sample:
    return Sample(
        key=sample_key(3, ordinal),
        shard_no=3,
        url=f"http://img.example/{ordinal}.jpg",
        caption=caption,
        page_url="http://img.example/",
        source="test.wat.gz",
        status=status.value,
        image=image,
        image_format="jpeg" if image else None,
    )


def wrong_caption(shape: str, colour: str, wrong: str, rng: random.Random) -> str:
    """A caption that gets the ``wrong`` part ("shape", "colour" or "both") wrong."""
    if wrong in ("shape", "both"):
        shape = rng.choice([s for s in synthetic_images.SHAPES if s != shape])
    if wrong in ("colour", "both"):
        colour = rng.choice([c for c in synthetic_images.COLOURS if c != colour])
    return synthetic_images.caption_for(shape, colour)


@pytest.fixture(scope="module")
def handler() -> OpenClipModelHandler:
    return OpenClipModelHandler(TINY)


@pytest.fixture(scope="module")
def model(handler: OpenClipModelHandler) -> ClipScorer:
    return handler.load_model()


@pytest.fixture(scope="module")
def rows() -> tuple[list[Sample], list[Sample]]:
    """Pending rows with their own caption, and the same pictures with a wrong one.

    Wrong captions miss the shape only, the colour only, or both: the first two are the hard
    cases ("a blue circle" for a red circle).
    """
    rng = random.Random(SEED)
    examples = list(synthetic_images.iter_examples(SEED, count=6))
    matching = [sample(i, e.caption, encoded(e.image)) for i, e in enumerate(examples)]
    mismatched = [
        sample(100 + i, wrong_caption(e.shape, e.colour, ("shape", "colour", "both")[i % 3], rng), encoded(e.image, "PNG"))
        for i, e in enumerate(examples)
    ]
    return matching, mismatched


def direct_similarity(image_bytes: bytes, caption: str) -> float:
    """open_clip by hand, from the packaged files: no clipcrawl code in the way."""
    assets = importlib.resources.files("clipcrawl.transforms").joinpath("assets")
    with importlib.resources.as_file(assets.joinpath(TINY_CHECKPOINT_FILE)) as checkpoint:
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL_NAME, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(TINY_MODEL_NAME)
    with torch.no_grad():
        image = model.encode_image(preprocess(Image.open(io.BytesIO(image_bytes)).convert("RGB")).unsqueeze(0))
        text = model.encode_text(tokenizer([caption]))
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    return float((image @ text.T).item())


def test_handler_similarity_equals_direct_open_clip(handler, model, rows) -> None:
    matching, mismatched = rows
    batch = [matching[0], mismatched[0], matching[1]]
    results = list(handler.run_inference(batch, model))
    assert [r.example for r in results] == batch
    for result in results:
        expected = direct_similarity(result.example.image, result.example.caption)
        assert isinstance(result.inference, ClipScore)
        assert result.inference.similarity == pytest.approx(expected, abs=1e-5)
        assert (result.inference.tags, result.inference.image_embedding) == (None, None)  # not asked for


def test_handler_marks_undecodable_images_without_failing_the_batch(handler, model, rows) -> None:
    good = rows[0][0]
    batch = [sample(7, "a red circle", b"\x89PNG not really"), good, sample(8, "a red circle", None)]
    scores = [r.inference for r in handler.run_inference(batch, model)]
    assert isinstance(scores[0], Undecodable) and "UnidentifiedImageError" in scores[0].message
    assert isinstance(scores[1], ClipScore)
    assert scores[2] == Undecodable("image not decodable at scoring: ValueError: no image bytes")


def test_handler_batching_and_size_come_from_the_config(handler, rows) -> None:
    # Fixed batches by default (min = max): a GPU wants full ones.
    assert handler.batch_elements_kwargs() == {"min_batch_size": 8, "max_batch_size": 8}
    adaptive = OpenClipModelHandler(dataclasses.replace(TINY, min_batch_size=2, max_batch_duration_secs=5))
    assert adaptive.batch_elements_kwargs() == {"min_batch_size": 2, "max_batch_size": 8, "max_batch_duration_secs": 5}
    assert not handler.share_model_across_processes()  # one model per process: RunInference's default
    assert OpenClipModelHandler(dataclasses.replace(TINY, share_model=True)).share_model_across_processes()
    batch = rows[0][:3]
    assert handler.get_num_bytes(batch) == sum(len(s.image) for s in batch)


def test_apply_score_keeps_or_rejects_and_records_the_similarity() -> None:
    row = sample(1, "a red circle", b"jpeg bytes")
    kept = apply_score(row, 0.31, threshold=0.28)
    assert (kept.status, kept.similarity, kept.image, kept.error_message) == ("success", 0.31, b"jpeg bytes", None)
    low = apply_score(row, 0.1234, threshold=0.28)
    assert (low.status, low.similarity, low.image) == ("below_threshold", 0.1234, None)
    assert low.error_message == "similarity 0.1234 < threshold 0.28"
    assert apply_score(row, 0.28, threshold=0.28).status == "success"  # at the threshold is kept
    bad = apply_score(row, Undecodable("broken"), threshold=0.28)
    assert (bad.status, bad.error_message, bad.image, bad.similarity) == ("failed_to_decode", "broken", None, None)


def test_config_defaults_follow_laion_and_validate() -> None:
    default = ClipConfig.from_kwargs(threshold=None, model_name=None)
    assert (default.model_name, default.pretrained, default.threshold) == ("ViT-B-32", "openai", 0.28)
    assert ClipConfig.from_kwargs(model_name=TINY_MODEL_NAME).pretrained is None
    with pytest.raises(ValueError, match="min_batch_size"):
        ClipConfig(min_batch_size=10, max_batch_size=5)
    with pytest.raises(ValueError, match="threshold"):
        ClipConfig(threshold=1.5)
    with pytest.raises(TypeError, match="unknown"):
        ClipConfig.from_kwargs(treshold=0.3)


def matches_expected(expected: dict[str, dict[str, Any]]) -> Callable[[list[Sample]], None]:
    """Checks each output row's fields: floats to 1e-4, callables as predicates, others exactly."""

    def check(actual: list[Sample]) -> None:
        by_key = {row.key: row for row in actual}
        if sorted(by_key) != sorted(expected) or len(actual) != len(expected):
            raise BeamAssertException(f"keys {sorted(by_key)} != {sorted(expected)}")
        for key, fields in expected.items():
            row = by_key[key]
            for name, value in fields.items():
                got = getattr(row, name)
                if callable(value):
                    ok = value(got)
                elif isinstance(value, float):
                    ok = got == pytest.approx(value, abs=1e-4)
                else:
                    ok = got == value
                if not ok:
                    raise BeamAssertException(f"{key}.{name}: {got!r} != {value!r}")

    return check


def test_score_with_clip_keeps_matches_rejects_mismatches_and_counts(handler, model, rows) -> None:
    matching, mismatched = rows
    scores = {r.example.key: r.inference.similarity for r in handler.run_inference(matching + mismatched, model)}
    lowest_match = min(scores[s.key] for s in matching)
    highest_mismatch = max(scores[s.key] for s in mismatched)
    assert lowest_match > highest_mismatch + 0.2, (lowest_match, highest_mismatch)
    threshold = (lowest_match + highest_mismatch) / 2  # from the measurements, not a lucky constant

    settled = sample(50, "a red circle", None, Status.DUPLICATE)
    settled = dataclasses.replace(settled, error_message="same url and caption as 0000030000000")
    broken = sample(60, "a blue star", b"GIF89a truncated")
    expected: dict[str, dict] = {settled.key: dataclasses.asdict(settled)}
    for row in matching:
        expected[row.key] = {"status": "success", "similarity": scores[row.key], "image": row.image, "error_message": None}
    below = re.compile(rf"similarity -?\d\.\d{{4}} < threshold {re.escape(f'{threshold:g}')}")
    for row in mismatched:
        expected[row.key] = {
            "status": "below_threshold",
            "similarity": scores[row.key],
            "image": None,
            "error_message": below.fullmatch,
        }
    expected[broken.key] = {
        "status": "failed_to_decode",
        "image": None,
        "similarity": None,
        "error_message": lambda message: message.startswith("image not decodable at scoring"),
    }

    pipeline = TestPipeline(options=beam_options())
    scored = (
        pipeline
        | "Rows" >> beam.Create([settled, *matching, *mismatched, broken])
        | "Score" >> ScoreWithClip(dataclasses.replace(TINY, threshold=threshold))
    )
    assert_that(scored, matches_expected(expected), label="CheckScoredRows")
    result = pipeline.run()
    result.wait_until_finish()

    counters = result.metrics().query(MetricsFilter().with_namespace(metrics.namespace(metrics.SCORE)))["counters"]
    values = {counter.key.metric.name: counter.committed for counter in counters}
    pending = len(matching) + len(mismatched) + 1
    assert values[metrics.TOTAL] == pending  # the settled row goes around the stage
    assert values[metrics.FORWARDED] == len(matching)
    assert values[metrics.DROPPED] == len(mismatched) + 1
    assert values[metrics.dropped_name(Status.BELOW_THRESHOLD)] == len(mismatched)
    assert values[metrics.dropped_name(Status.FAILED_TO_DECODE)] == 1


def test_apply_score_threshold_edges_on_both_sides() -> None:
    row = sample(1, "a red circle", b"jpeg bytes")
    for threshold in (0.28, -0.5, 0.0, 0.9999):
        below, above = math.nextafter(threshold, -math.inf), math.nextafter(threshold, math.inf)
        assert apply_score(row, threshold, threshold).status == "success"
        assert apply_score(row, above, threshold).status == "success"
        assert apply_score(row, below, threshold).status == "below_threshold"


def run_scored(rows: list[Sample], config: ClipConfig, check: Callable[[list[Sample]], None] | None = None) -> Any:
    """``rows`` through ScoreWithClip on the FnApiRunner, ``check`` on its output; the run result."""
    pipeline = TestPipeline(options=beam_options())
    scored = pipeline | "Rows" >> beam.Create(rows) | "Score" >> ScoreWithClip(config)
    if check is not None:
        assert_that(scored, check, label="Check")
    result = pipeline.run()
    result.wait_until_finish()
    return result


def test_threshold_at_a_real_similarity_keeps_it_and_the_next_float_up_drops_it(handler, model, rows) -> None:
    """The edge decided by the pipeline on the model's own score, not on a hand-made float."""
    row = rows[0][0]
    (result,) = handler.run_inference([row], model)
    exact = result.inference.similarity
    same = exact.__eq__  # the pipeline's batch of one gives the very same float
    kept = {row.key: {"status": "success", "similarity": same}}
    dropped = {row.key: {"status": "below_threshold", "similarity": same, "image": None}}
    run_scored([row], dataclasses.replace(TINY, threshold=exact), matches_expected(kept))
    run_scored([row], dataclasses.replace(TINY, threshold=math.nextafter(exact, math.inf)), matches_expected(dropped))


def test_batching_metrics_come_from_run_inference(rows) -> None:
    matching, mismatched = rows
    pending = (matching + mismatched)[:11]
    config = dataclasses.replace(TINY, max_batch_size=4)  # min = max = 4: batches of 4, 4, 3
    result = run_scored(pending, config)
    namespace = f"{metrics.namespace(metrics.SCORE)}.inference"
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    counters = {c.key.metric.name: c.committed for c in query["counters"]}
    distributions = {d.key.metric.name: d.committed for d in query["distributions"]}
    assert counters["num_inferences"] == len(pending)
    sizes = distributions["inference_request_batch_size"]
    assert (sizes.sum, sizes.max) == (len(pending), 4)
    assert sizes.count == math.ceil(len(pending) / 4)  # one bundle: only the last batch is partial
    assert distributions["inference_request_batch_byte_size"].sum == sum(len(s.image) for s in pending)
    assert distributions["load_model_latency_milli_secs"].count >= 1


ACCELERATOR_URN = "beam:resources:accelerator:v1"


def test_accelerator_hint_is_on_the_scoring_step_only() -> None:
    hint = "type:nvidia-l4;count:1;install-nvidia-driver"
    pipeline = beam.Pipeline(options=beam_options())
    _ = (
        pipeline
        | "Rows" >> beam.Create([sample(0, "a red circle", None)])
        | "Score" >> ScoreWithClip(dataclasses.replace(TINY, accelerator=hint))
    )
    proto = pipeline.to_runner_api()
    components = proto.components

    def hints(transform) -> dict[str, bytes]:
        environment = components.environments.get(transform.environment_id)
        return dict(environment.resource_hints) if environment is not None else {}

    leaves = {t.unique_name: t for t in components.transforms.values() if not t.subtransforms}
    inference = [name for name in leaves if name.endswith("RunInference/BeamML_RunInference")]
    assert len(inference) == 1
    assert hints(leaves[inference[0]])[ACCELERATOR_URN] == hint.encode()
    assert hints(leaves["Score/ScorePending/Process/ApplyThreshold"])[ACCELERATOR_URN] == hint.encode()
    routing = [name for name in leaves if "SplitPending" in name or name.startswith("Rows")]
    assert routing and all(ACCELERATOR_URN not in hints(leaves[name]) for name in routing)
    unhinted = beam.Pipeline(options=beam_options())
    _ = unhinted | beam.Create([sample(0, "a red circle", None)]) | ScoreWithClip(TINY)
    environments = unhinted.to_runner_api().components.environments.values()
    assert all(ACCELERATOR_URN not in env.resource_hints for env in environments)
