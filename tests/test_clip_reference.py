"""The scorer against open_clip by hand: ViT-B-32 with random weights (the pretrained code path,
other weights), trimmed text against the full context, micro-batches, reduced precision.

ViT-B-32 runs on CPU here, so its batches are tiny.
"""

from __future__ import annotations

import dataclasses
import io
import random

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipcrawl.pipelines import synthetic_images
from clipcrawl.transforms.clip_handler import ClipScorer
from clipcrawl.transforms.clip_model import (
    TINY_MODEL_NAME,
    encode_text,
    load_clip,
    text_trim_supported,
    trimmed_length,
)
from clipcrawl.transforms.clip_scoring import ClipConfig, ClipScore, Undecodable

SEED = 5151
LONG_CAPTION = " ".join(["a very long caption about a red circle on a grey background"] * 12)  # > 77 tokens
CAPTIONS = ["a red circle", "a blue star on a plain background", "x", LONG_CAPTION]


def jpeg(image: Image.Image, side: int = 256) -> bytes:
    buffer = io.BytesIO()
    image.resize((side, side)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pictures() -> list[bytes]:
    return [jpeg(example.image) for example in synthetic_images.iter_examples(SEED, count=len(CAPTIONS))]


@pytest.fixture(scope="module")
def vit() -> ClipScorer:
    torch.manual_seed(0)
    return ClipScorer(ClipConfig(model_name="ViT-B-32", pretrained=None, device="cpu", max_batch_size=4))


def direct_open_clip(name: str, state: dict, images: list[bytes], captions: list[str]) -> list[float]:
    """open_clip's own model, preprocess and tokenizer at full context: no clipcrawl code."""
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.load_state_dict(state)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])
        image = model.encode_image(pixels)
        text = model.encode_text(tokenizer(captions))
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    return (image * text).sum(dim=-1).tolist()


def test_vit_b32_random_weights_equal_direct_open_clip(vit, pictures) -> None:
    assert vit.clip.trim_text  # so the trimmed text path is the one compared
    scores = vit.score(pictures, CAPTIONS)
    expected = direct_open_clip("ViT-B-32", vit.clip.model.state_dict(), pictures, CAPTIONS)
    assert all(isinstance(score, ClipScore) for score in scores)
    np.testing.assert_allclose([score.similarity for score in scores], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [TINY_MODEL_NAME, "ViT-B-32"])
def test_text_trimmed_to_the_longest_caption_equals_the_full_context(name, vit) -> None:
    loaded = vit.clip if name == "ViT-B-32" else load_clip(name, None, device="cpu")
    assert text_trim_supported(loaded.model) and loaded.trim_text
    short = ["a red circle", "a blue star on a plain background", "x"]
    tokens = loaded.tokenizer(short)
    assert trimmed_length(tokens) < tokens.shape[1] // 3  # the trim is real: 9 of 77 (or 32) positions
    for captions in (short, short + [LONG_CAPTION]):  # with a truncated caption the trim is a no-op
        tokens = loaded.tokenizer(captions)
        with torch.inference_mode():
            full = F.normalize(loaded.model.encode_text(tokens), dim=-1)
            trimmed = F.normalize(encode_text(loaded, tokens), dim=-1)
        cosines = (full * trimmed).sum(dim=-1)
        np.testing.assert_allclose(cosines.numpy(), 1.0, atol=1e-5)
        np.testing.assert_allclose(trimmed.numpy(), full.numpy(), atol=1e-5)


def test_towers_that_would_see_the_padding_are_not_trimmed() -> None:
    loaded = load_clip(TINY_MODEL_NAME, None, device="cpu")
    model = loaded.model
    model.text_pool_type = "last"  # a tower that pools the last position reads the padding
    assert not text_trim_supported(model)
    model.text_pool_type = "argmax"
    mask = model.attn_mask
    model.attn_mask = torch.zeros_like(mask)  # bidirectional attention: padding reaches the EOT
    assert not text_trim_supported(model)
    model.attn_mask = mask
    assert text_trim_supported(model)
    untrimmed = load_clip(TINY_MODEL_NAME, None, device="cpu", trim_text=False)
    assert not untrimmed.trim_text


def test_micro_batches_and_length_sorted_text_give_the_same_scores(pictures) -> None:
    tiny = ClipConfig.from_kwargs(model_name=TINY_MODEL_NAME, device="cpu")
    rng = random.Random(SEED)
    images = [*pictures, b"not an image", *pictures[:2], None]
    captions = [*CAPTIONS, "a red circle", *rng.sample(CAPTIONS, 2), "a green cross"]
    whole = ClipScorer(tiny).score(images, captions)
    chunked = ClipScorer(dataclasses.replace(tiny, micro_batch_size=3)).score(images, captions)
    untrimmed = ClipScorer(dataclasses.replace(tiny, trim_text=False)).score(images, captions)
    for a, b, c in zip(whole, chunked, untrimmed):
        if isinstance(a, Undecodable):
            assert a == b == c
        else:
            assert b.similarity == pytest.approx(a.similarity, abs=1e-6)
            assert c.similarity == pytest.approx(a.similarity, abs=1e-6)
    assert [type(score) for score in whole].count(Undecodable) == 2


@pytest.mark.parametrize(("precision", "bound"), [("bf16", 0.02), ("fp16", 0.005)])
def test_reduced_precision_stays_near_fp32(precision, bound) -> None:
    """Measured on CPU (tiny, 80 pairs): bf16 max 0.0038, fp16 max 0.0004; README 'CLIP precision'."""
    examples = list(synthetic_images.iter_examples(SEED + 1, count=80))
    rng = random.Random(SEED)
    images = [jpeg(example.image, 64) for example in examples]
    captions = [e.caption if i % 2 else synthetic_images.caption_for(*rng.choice(synthetic_images.all_classes()))
                for i, e in enumerate(examples)]
    tiny = ClipConfig.from_kwargs(model_name=TINY_MODEL_NAME, device="cpu")
    reference = np.array([s.similarity for s in ClipScorer(tiny).score(images, captions)])
    reduced = np.array([s.similarity for s in ClipScorer(dataclasses.replace(tiny, precision=precision)).score(
        images, captions)])
    deviation = np.abs(reduced - reference)
    assert 0 < deviation.max() < bound  # not fp32 in disguise, and not far off
    assert ((reduced >= 0.28) != (reference >= 0.28)).sum() <= 1
