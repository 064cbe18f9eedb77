"""Scaled WebP decoding through pyvips: same sizes, pixels, errors and limits as the Pillow path."""

from __future__ import annotations

import concurrent.futures
import io
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from clipcrawl.transforms import image_processing
from clipcrawl.transforms.image_processing import ImageError, ImageSpec, process_image
from clipcrawl.transforms.status import Status

pyvips = pytest.importorskip("pyvips")


def webp(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", **params)
    return buffer.getvalue()


def spec(**overrides: object) -> ImageSpec:
    return ImageSpec(**{"image_size": 100, "encode_format": "png", "encode_quality": 1, **overrides})


def stored(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def picture(size: tuple[int, int]) -> Image.Image:
    """Smooth gradients and flat blocks: what a good downscale of either decoder agrees on."""
    width, height = size
    xs, ys = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    array = np.stack([xs, ys, 255 - xs], axis=-1).astype(np.uint8)
    array[: height // 3, : width // 3] = (250, 20, 20)
    array[-height // 4 :, -width // 4 :] = (20, 20, 240)
    return Image.fromarray(array)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The scale of every scaled WebP decode (an empty list: Pillow decoded everything)."""
    scales: list[float] = []
    real = pyvips.Image.webpload_buffer

    def spy(data: bytes, **options: object) -> object:
        scales.append(float(options["scale"]))
        return real(data, **options)

    monkeypatch.setattr(pyvips.Image, "webpload_buffer", spy)
    return scales


@pytest.fixture
def pillow_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_processing, "webp_decoder", lambda: None)


def via_pillow(data: bytes, image_spec: ImageSpec, monkeypatch: pytest.MonkeyPatch) -> image_processing.ProcessedImage:
    with monkeypatch.context() as patch:
        patch.setattr(image_processing, "webp_decoder", lambda: None)
        return process_image(data, image_spec)


def test_the_decoder_is_set_up_for_many_threads() -> None:
    assert image_processing.webp_decoder() is pyvips
    assert pyvips.concurrency_get() == 1


def test_no_decoder_when_pyvips_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyvips", None)  # makes `import pyvips` raise ImportError
    assert image_processing.webp_decoder.__wrapped__() is None


@pytest.mark.parametrize(
    ("mode", "size"), [("keep_ratio", (216, 100)), ("center_crop", (100, 100)), ("border", (100, 100))]
)
def test_large_webp_is_decoded_scaled_with_the_same_sizes_and_pixels(
    mode: str, size: tuple[int, int], calls: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = webp(picture((1300, 601)), quality=90)
    result = process_image(data, spec(resize_mode=mode))
    assert calls and calls[0] < 0.5  # libwebp decoded at the target scale, not at full size
    assert (result.width, result.height) == size
    assert (result.original_width, result.original_height) == (1300, 601)
    reference = via_pillow(data, spec(resize_mode=mode), monkeypatch)
    assert (reference.width, reference.height) == size
    difference = np.abs(stored(result.data) - stored(reference.data))
    assert difference.mean() < 3 and np.percentile(difference, 99) < 30


def test_small_webp_stays_on_pillow(calls: list[float]) -> None:
    result = process_image(webp(picture((150, 120))), spec(resize_mode="keep_ratio"))
    assert calls == []
    assert (result.width, result.height) == (125, 100)


def test_no_resize_keeps_pillow(calls: list[float]) -> None:
    result = process_image(webp(picture((600, 400))), spec(resize_mode="no"))
    assert calls == []
    assert (result.width, result.height) == (600, 400)


def test_without_pyvips_pillow_decodes_large_webp(pillow_only: None, calls: list[float]) -> None:
    result = process_image(webp(picture((1000, 800))), spec(resize_mode="keep_ratio"))
    assert calls == []
    assert (result.width, result.height) == (125, 100)


def test_transparency_becomes_white(calls: list[float]) -> None:
    image = Image.new("RGBA", (800, 400), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 400, 400))  # left half fully transparent
    pixels = stored(process_image(webp(image, lossless=True), spec(resize_mode="keep_ratio")).data)
    assert calls
    assert pixels.shape == (100, 200, 3)
    assert tuple(pixels[50, 20]) == (255, 255, 255)
    assert tuple(pixels[50, 180]) == (255, 0, 0)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_matches_pillow(orientation: int, calls: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = webp(picture((900, 400)), quality=90, exif=exif)
    result = process_image(data, spec(resize_mode="keep_ratio"))
    reference = via_pillow(data, spec(resize_mode="keep_ratio"), monkeypatch)
    assert calls
    swapped = orientation in (6, 8)
    assert (result.original_width, result.original_height) == ((400, 900) if swapped else (900, 400))
    expected = (100, 225) if swapped else (225, 100)
    assert (result.width, result.height) == (reference.width, reference.height) == expected
    assert np.abs(stored(result.data) - stored(reference.data)).mean() < 3  # turned the same way


def test_animated_webp_uses_the_first_frame(calls: list[float]) -> None:
    frames = [Image.new("RGB", (600, 600), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = webp(frames[0], save_all=True, append_images=frames[1:], duration=100, lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    pixels = stored(process_image(data, spec(resize_mode="keep_ratio")).data)
    assert calls
    red, _, blue = pixels[50, 50]
    assert red > 250 and blue < 5


def _rewrap(frame: bytes) -> bytes:
    """A simple lossy WebP around ``frame``, with RIFF and chunk sizes that match it."""
    chunk = b"VP8 " + struct.pack("<I", len(frame)) + frame + b"\0" * (len(frame) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


@pytest.mark.parametrize("damage", ["truncated-frame", "garbage-partition"])
def test_corrupt_webp_fails_to_decode_like_pillow(
    damage: str, calls: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = webp(Image.effect_noise((800, 600), 40).convert("RGB"), quality=80)
    assert good[12:16] == b"VP8 "
    frame = good[20:]
    frame = frame[: len(frame) // 3] if damage == "truncated-frame" else frame[:30] + bytes(range(256)) * 40
    data = _rewrap(frame)  # Pillow's header reader accepts it: the sizes are consistent
    assert Image.open(io.BytesIO(data)).size == (800, 600)
    with pytest.raises(ImageError) as caught:
        process_image(data, spec())
    assert calls
    assert caught.value.status is Status.FAILED_TO_DECODE
    assert str(caught.value).startswith("WebP decode failed: ") and "\n" not in str(caught.value)
    with pytest.raises(ImageError) as pillow_caught:
        via_pillow(data, spec(), monkeypatch)
    assert pillow_caught.value.status is Status.FAILED_TO_DECODE


def test_pixel_limit_is_checked_before_the_scaled_decoder(calls: list[float]) -> None:
    with pytest.raises(ImageError) as caught:
        process_image(webp(picture((1200, 1000))), spec(max_image_pixels=1_000_000))
    assert caught.value.status is Status.TOO_LARGE
    assert calls == []


def test_threads_get_the_same_bytes_as_one_thread() -> None:
    sources = [webp(picture((800 + 37 * n, 500 + 23 * n)), quality=80) for n in range(6)] * 4
    serial = [process_image(data, spec(encode_format="jpg", encode_quality=95)).sha256 for data in sources]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda data: process_image(data, spec(encode_format="jpg", encode_quality=95)).sha256,
                                 sources))
    assert threaded == serial
