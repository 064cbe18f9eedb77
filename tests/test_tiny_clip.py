"""The packaged clipcrawl-tiny model, its renderer and the similarity helper.

Pictures are rendered with seeds that training (seed 0) and its own evaluation never used, so
these check that the committed checkpoint generalises, not that it memorised.
"""

from __future__ import annotations

import importlib.resources
import json
import random

import numpy as np
import pytest
import torch

from clipcrawl.pipelines import synthetic_images
from clipcrawl.pipelines.train_tiny_clip import LAION_THRESHOLD, measure_separation
from clipcrawl.transforms.clip_model import (
    TINY_CHECKPOINT_FILE,
    TINY_MODEL_NAME,
    LoadedClip,
    cosine_similarities,
    load_clip,
)

TEST_SEED = 4242


@pytest.fixture(scope="module")
def tiny() -> LoadedClip:
    return load_clip(TINY_MODEL_NAME, None, device="cpu")


def encode_images(tiny: LoadedClip, images: list) -> torch.Tensor:
    with torch.inference_mode():
        return tiny.model.encode_image(torch.stack([tiny.preprocess(image) for image in images]))


def encode_texts(tiny: LoadedClip, captions: list[str]) -> torch.Tensor:
    with torch.inference_mode():
        return tiny.model.encode_text(tiny.tokenizer(captions))


def test_true_pairs_score_far_above_shuffled_pairs(tiny: LoadedClip) -> None:
    examples = list(synthetic_images.iter_examples(TEST_SEED, count=80))
    images = [example.image for example in examples]
    captions = [example.caption for example in examples]
    # Within a round every caption differs, so rolling by one never pairs an image with its own class.
    shuffled = captions[1:40] + captions[:1] + captions[41:] + captions[40:41]
    image_features = encode_images(tiny, images)
    true_pairs = cosine_similarities(image_features, encode_texts(tiny, captions))
    shuffled_pairs = cosine_similarities(image_features, encode_texts(tiny, shuffled))
    assert all(a != b for a, b in zip(captions, shuffled))
    assert true_pairs.mean() - shuffled_pairs.mean() > 0.5
    assert (true_pairs > shuffled_pairs).float().mean() > 0.95


def test_picks_the_right_caption_among_all_forty(tiny: LoadedClip) -> None:
    report = measure_separation(tiny.model, tiny.preprocess, tiny.tokenizer, seed=TEST_SEED, rounds=3)
    chance = 1 / len(synthetic_images.all_classes())
    assert report["accuracy"] > 0.9 > 10 * chance


def test_laion_threshold_separates_matched_from_each_kind_of_mismatch(tiny: LoadedClip) -> None:
    report = measure_separation(tiny.model, tiny.preprocess, tiny.tokenizer, seed=TEST_SEED + 1, rounds=3)
    assert report["threshold"] == LAION_THRESHOLD == 0.28
    assert report["matched"]["correct_side"] >= 0.95
    assert report["both_mismatch"]["correct_side"] >= 0.95
    # Same shape in another colour, same colour in another shape: the hard cases.
    assert report["colour_mismatch"]["correct_side"] >= 0.85
    assert report["shape_mismatch"]["correct_side"] >= 0.85
    for kind in ("colour_mismatch", "shape_mismatch", "both_mismatch"):
        assert report["matched"]["p5"] > report[kind]["p95"], kind


def test_cosine_similarities_is_the_row_wise_cosine() -> None:
    generator = torch.Generator().manual_seed(7)
    a, b = torch.randn(5, 16, generator=generator), torch.randn(5, 16, generator=generator)
    expected = [float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(cosine_similarities(a, b).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(cosine_similarities(3 * a, b).numpy(), expected, atol=1e-6)  # scale-free
    torch.testing.assert_close(cosine_similarities(a, a), torch.ones(5))
    with pytest.raises(ValueError, match="shapes differ"):
        cosine_similarities(a, b[:4])


def test_packaged_checkpoint_is_small_fp16_and_loads_as_fp32(tiny: LoadedClip) -> None:
    assets = importlib.resources.files("clipcrawl.transforms").joinpath("assets")
    checkpoint = assets.joinpath(TINY_CHECKPOINT_FILE)
    with importlib.resources.as_file(checkpoint) as path:
        assert path.stat().st_size < 5 * 1024 * 1024
        state = torch.load(path, weights_only=True)
    assert {tensor.dtype for tensor in state.values() if tensor.is_floating_point()} == {torch.float16}
    assert {p.dtype for p in tiny.model.parameters()} == {torch.float32}
    config = json.loads(assets.joinpath(f"{TINY_MODEL_NAME}.json").read_text())
    assert config["text_cfg"]["vocab_size"] == 49408  # open_clip's standard tokenizer


def test_renderer_is_deterministic_and_balanced() -> None:
    first = [(e.caption, e.image.tobytes()) for e in synthetic_images.iter_examples(3, count=45)]
    again = [(e.caption, e.image.tobytes()) for e in synthetic_images.iter_examples(3, count=45)]
    assert first == again
    assert len({caption for caption, _ in first[:40]}) == 40  # one round covers every class once
    image = synthetic_images.render_shape("star", "blue", 64, random.Random(1))
    assert image.mode == "RGB" and image.size == (64, 64)
    assert synthetic_images.caption_for("circle", "red") == "a red circle"
    assert synthetic_images.caption_for("square", "orange") == "an orange square"
    with pytest.raises(ValueError, match="unknown shape"):
        synthetic_images.caption_for("hexagon", "red")


def test_tiny_ignores_hub_tags_but_not_missing_checkpoints(tiny: LoadedClip, tmp_path) -> None:
    # The CLI's --clip_pretrained defaults to "openai"; clipcrawl-tiny has only its own weights.
    tagged = load_clip(TINY_MODEL_NAME, "openai", device="cpu")
    for mine, theirs in zip(tiny.model.state_dict().values(), tagged.model.state_dict().values()):
        assert torch.equal(mine, theirs)
    with pytest.raises(FileNotFoundError):
        load_clip(TINY_MODEL_NAME, str(tmp_path / "missing.pt"), device="cpu")
