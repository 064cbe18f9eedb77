"""Image preparation for CLIP: the threaded CPU path equals open_clip's preprocess exactly; the
tensor (nvJPEG) path is close; bad images become messages, not exceptions."""

from __future__ import annotations

import io

import open_clip
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image
from torchvision import transforms as T

from clipcrawl.pipelines import synthetic_images
from clipcrawl.transforms.clip_model import TINY_MODEL_NAME, load_clip
from clipcrawl.transforms.clip_preprocess import (
    ImagePreparer,
    decode_image,
    decode_resize_tensors,
    plan_for,
    undecodable_message,
)


def encoded(image: Image.Image, image_format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vit_preprocess():
    return open_clip.image_transform(224, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)


@pytest.fixture(scope="module")
def images() -> list[bytes | None]:
    pictures = [example.image for example in synthetic_images.iter_examples(31, count=6)]
    good = encoded(pictures[0].resize((256, 256)), "JPEG", quality=95)
    return [
        good,
        encoded(pictures[1].resize((300, 200)), "JPEG", quality=80),  # not square
        encoded(pictures[2].convert("RGBA").resize((256, 256)), "PNG"),
        encoded(pictures[3].convert("L").resize((256, 256)), "JPEG"),  # greyscale
        encoded(pictures[4].convert("CMYK").resize((256, 256)), "JPEG"),
        encoded(pictures[5].resize((20, 10)), "WEBP"),  # smaller than the model: upscaled
        good[: len(good) // 2],  # truncated
        b"<html>not an image</html>",
        None,
    ]


def expected_errors(images: list[bytes | None]) -> dict[int, str]:
    errors = {}
    for i, data in enumerate(images):
        try:
            decode_image(data)
        except (OSError, ValueError) as error:
            errors[i] = undecodable_message(error)
    return errors


def test_plan_splits_open_clip_preprocess(vit_preprocess) -> None:
    plan = plan_for(vit_preprocess)
    assert plan is not None
    assert (plan.size, plan.resize, plan.mean, plan.std) == ((224, 224), 224, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    assert plan_for(T.Compose([T.ToTensor()])) is None


@pytest.mark.parametrize("model", ["ViT-B-32", TINY_MODEL_NAME])
def test_cpu_path_equals_open_clip_preprocess_exactly(model, vit_preprocess, images) -> None:
    preprocess = vit_preprocess if model == "ViT-B-32" else load_clip(TINY_MODEL_NAME, None, device="cpu").preprocess
    preparer = ImagePreparer(preprocess, "cpu", threads=3)
    prepared = preparer.prepare(images)
    assert prepared.errors == expected_errors(images)
    assert set(prepared.errors) == {6, 7, 8}
    assert prepared.ok == [0, 1, 2, 3, 4, 5]
    pixels = preparer.to_model_input(prepared, torch.float32)
    reference = torch.stack([preprocess(Image.open(io.BytesIO(images[i])).convert("RGB")) for i in prepared.ok])
    assert pixels.dtype == torch.float32 and pixels.is_contiguous()
    assert torch.equal(pixels, reference)  # bit for bit
    channels_last = preparer.to_model_input(prepared, torch.float32, channels_last=True)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last, reference)
    assert torch.equal(preparer.to_model_input(prepared, torch.bfloat16), reference.to(torch.bfloat16))


def test_preprocess_it_cannot_split_runs_whole_and_is_still_exact(images) -> None:
    odd = T.Compose([T.Resize(40), T.CenterCrop(40), T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3),
                     T.Lambda(lambda x: x.flip(-1))])
    assert plan_for(odd) is None
    preparer = ImagePreparer(odd, "cpu", threads=2)
    prepared = preparer.prepare(images)
    assert set(prepared.errors) == {6, 7, 8}
    expected = torch.stack([odd(decode_image(images[i])) for i in prepared.ok])
    assert torch.equal(preparer.to_model_input(prepared, torch.float32), expected)


def test_all_bad_chunk_and_empty_chunk(vit_preprocess) -> None:
    preparer = ImagePreparer(vit_preprocess, "cpu", threads=2)
    prepared = preparer.prepare([None, b"junk"])
    assert prepared.ok == [] and set(prepared.errors) == {0, 1}
    assert preparer.prepare([]).ok == []


def test_tensor_decode_path_is_within_two_levels_of_pillow(vit_preprocess, images) -> None:
    """What nvJPEG runs, on CPU (libjpeg + torchvision's antialiased bicubic): close, not equal."""
    plan = plan_for(vit_preprocess)
    jpegs = [0, 1, 3]  # RGB, non-square, greyscale
    tensors = decode_resize_tensors([images[i] for i in jpegs], plan, "cpu")
    pillow = ImagePreparer(vit_preprocess, "cpu", threads=2).prepare([images[i] for i in jpegs]).pixels
    assert tensors.shape == pillow.shape == (3, 3, 224, 224) and tensors.dtype == torch.uint8
    difference = (tensors.int() - pillow.int()).abs()
    assert difference.max() <= 3
    assert difference.float().mean() < 0.05


def test_nvjpeg_falls_back_to_cpu_threads_without_cuda(vit_preprocess, images) -> None:
    preparer = ImagePreparer(vit_preprocess, "cpu", decoder="nvjpeg")
    assert preparer.decoder == "cpu"
    assert preparer.prepare(images).ok == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="decoder"):
        ImagePreparer(vit_preprocess, "cpu", decoder="dali")
