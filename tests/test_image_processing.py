"""Pure image functions: decoding, colour conversion, size rules, resize modes, encoding."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from clipcrawl.transforms.image_processing import ImageError, ImageSpec, process_image
from clipcrawl.transforms.status import Status


def encoded(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def spec(**overrides: object) -> ImageSpec:
    return ImageSpec(**{"image_size": 100, "encode_format": "png", "encode_quality": 1, **overrides})


def stored(result_data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(result_data))
    image.load()
    return image


WHITE_400x200 = encoded(Image.new("RGB", (400, 200), (255, 255, 255)))


@pytest.mark.parametrize(
    ("mode", "expected_size"),
    [("no", (400, 200)), ("keep_ratio", (200, 100)), ("center_crop", (100, 100)), ("border", (100, 100))],
)
def test_resize_modes_produce_img2dataset_sizes(mode: str, expected_size: tuple[int, int]) -> None:
    result = process_image(WHITE_400x200, spec(resize_mode=mode))
    assert (result.width, result.height) == expected_size
    assert stored(result.data).size == expected_size
    assert (result.original_width, result.original_height) == (400, 200)


def test_border_pads_with_black_bars_around_the_centred_image() -> None:
    image = stored(process_image(WHITE_400x200, spec(resize_mode="border")).data).convert("RGB")
    assert image.getpixel((50, 10)) == (0, 0, 0)  # top bar
    assert image.getpixel((50, 90)) == (0, 0, 0)  # bottom bar
    assert image.getpixel((50, 50)) == (255, 255, 255)  # the image itself, centred


def test_center_crop_keeps_the_middle() -> None:
    # Left third red, middle green, right third blue: the centred square is all green.
    array = np.zeros((100, 300, 3), dtype=np.uint8)
    array[:, :100, 0] = array[:, 100:200, 1] = array[:, 200:, 2] = 255
    result = process_image(encoded(Image.fromarray(array)), spec(resize_mode="center_crop"))
    image = stored(result.data).convert("RGB")
    assert image.size == (100, 100)
    assert image.getpixel((5, 50))[1] > 200 and image.getpixel((95, 50))[1] > 200


@pytest.mark.parametrize(
    ("mode", "expected_size"),
    [("keep_ratio", (400, 200)), ("center_crop", (400, 200)), ("border", (400, 200))],
)
def test_resize_only_if_bigger_leaves_small_images_alone(mode: str, expected_size: tuple[int, int]) -> None:
    result = process_image(WHITE_400x200, spec(image_size=500, resize_mode=mode, resize_only_if_bigger=True))
    assert (result.width, result.height) == expected_size


def test_resize_only_if_bigger_still_shrinks_big_images() -> None:
    result = process_image(WHITE_400x200, spec(image_size=100, resize_mode="keep_ratio", resize_only_if_bigger=True))
    assert (result.width, result.height) == (200, 100)


def test_small_images_are_upscaled_without_the_flag() -> None:
    result = process_image(WHITE_400x200, spec(image_size=500, resize_mode="keep_ratio"))
    assert (result.width, result.height) == (1000, 500)


def test_jpeg_draft_decoding_keeps_exact_sizes() -> None:
    photo = encoded(Image.effect_noise((1601, 1203), 40).convert("RGB"), "JPEG")
    result = process_image(photo, spec(image_size=100, resize_mode="keep_ratio"))
    assert (result.width, result.height) == (133, 100)  # 1601 * 100 / 1203 = 133.1
    assert (result.original_width, result.original_height) == (1601, 1203)


def test_large_jpegs_are_decoded_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded_sizes: list[tuple[int, int]] = []
    real_resize = Image.Image.resize

    def spying_resize(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        decoded_sizes.append(self.size)
        return real_resize(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spying_resize)
    photo = encoded(Image.effect_noise((1600, 1200), 40).convert("RGB"), "JPEG")
    process_image(photo, spec(image_size=100, resize_mode="keep_ratio"))
    assert decoded_sizes == [(200, 150)]  # libjpeg decoded at 1/8 scale, still above 133x100


def test_exif_rotation_is_applied_and_reported_as_displayed_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo = encoded(Image.new("RGB", (300, 100), (10, 200, 10)), "JPEG", exif=exif)
    result = process_image(photo, spec(resize_mode="no"))
    assert (result.width, result.height) == (100, 300)
    assert (result.original_width, result.original_height) == (100, 300)


def _transparent_red_square() -> Image.Image:
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half fully transparent
    return image


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: encoded(_transparent_red_square()), id="rgba"),
        pytest.param(lambda: encoded(_transparent_red_square().convert("LA")), id="la"),
        pytest.param(lambda: encoded(_transparent_red_square().convert("P")), id="palette-with-transparency"),
    ],
)
def test_transparency_becomes_white(make: Callable[[], bytes]) -> None:
    image = stored(process_image(make(), spec(resize_mode="no")).data)
    assert image.mode == "RGB"
    assert image.getpixel((5, 20)) == (255, 255, 255)
    assert image.getpixel((35, 20)) != (255, 255, 255)


def test_palette_cmyk_and_grey_inputs_decode_to_rgb() -> None:
    palette = Image.new("RGB", (30, 30), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    cmyk = Image.new("CMYK", (30, 30), (0, 255, 255, 0))  # pure red in CMYK
    grey = Image.new("L", (30, 30), 128)
    cases = [(palette, "GIF", (0, 0, 255)), (cmyk, "JPEG", (255, 0, 0)), (grey, "PNG", (128, 128, 128))]
    for source, fmt, expected in cases:
        image = stored(process_image(encoded(source, fmt), spec(resize_mode="no")).data)
        assert image.mode == "RGB"
        assert all(abs(a - b) <= 3 for a, b in zip(image.getpixel((15, 15)), expected)), (fmt, image.getpixel((15, 15)))


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    mid_grey = Image.fromarray(np.full((30, 30), 32896, dtype=np.uint16))  # 128 * 257
    image = stored(process_image(encoded(mid_grey), spec(resize_mode="no")).data)
    assert image.getpixel((15, 15)) == (128, 128, 128)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (30, 30), colour).convert("P") for colour in [(255, 0, 0), (0, 0, 255)]]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(gif)).n_frames == 2
    image = stored(process_image(gif, spec(resize_mode="no")).data)
    red, green, blue = image.getpixel((15, 15))
    assert red > 250 and blue < 5


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"<html><body>not an image</body></html>", id="html"),
        pytest.param(b"", id="empty"),
        pytest.param(encoded(Image.effect_noise((300, 300), 50).convert("RGB"), "JPEG")[:2000], id="truncated-jpeg"),
        pytest.param(encoded(Image.effect_noise((300, 300), 50))[:500], id="truncated-png"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n", id="eps-is-not-decoded"),
    ],
)
def test_undecodable_bytes_fail_to_decode(data: bytes) -> None:
    with pytest.raises(ImageError) as caught:
        process_image(data, spec())
    assert caught.value.status is Status.FAILED_TO_DECODE


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but has no real pixel data: decoding it would fail."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"garbage")


def test_pixel_limit_is_checked_on_the_header_before_decoding() -> None:
    with pytest.raises(ImageError) as caught:
        process_image(_png_header_only(5000, 5000), spec(max_image_pixels=1_000_000))
    assert caught.value.status is Status.TOO_LARGE
    assert "25000000" in str(caught.value)
    # The same bytes under a generous limit reach the decoder, which rejects them.
    with pytest.raises(ImageError) as caught:
        process_image(_png_header_only(5000, 5000), spec(max_image_pixels=30_000_000))
    assert caught.value.status is Status.FAILED_TO_DECODE


def test_pillow_decompression_bomb_is_too_large() -> None:
    with pytest.raises(ImageError) as caught:
        process_image(_png_header_only(60_000, 60_000), spec(max_image_pixels=10**10))
    assert caught.value.status is Status.TOO_LARGE


def test_tiny_image_is_too_small() -> None:
    with pytest.raises(ImageError) as caught:
        process_image(encoded(Image.new("RGB", (200, 9))), spec(min_image_size=10))
    assert caught.value.status is Status.TOO_SMALL
    assert process_image(encoded(Image.new("RGB", (10, 10))), spec(min_image_size=10)).original_width == 10


@pytest.mark.parametrize(
    ("fmt", "quality", "magic"), [("jpg", 90, b"\xff\xd8"), ("png", 6, b"\x89PNG"), ("webp", 80, b"RIFF")]
)
def test_encoding_and_sha256_of_the_stored_bytes(fmt: str, quality: int, magic: bytes) -> None:
    result = process_image(WHITE_400x200, spec(encode_format=fmt, encode_quality=quality))
    assert result.format == fmt
    assert result.data.startswith(magic)
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()


def test_jpeg_quality_is_applied() -> None:
    noise = encoded(Image.effect_noise((200, 200), 60).convert("RGB"))
    low = process_image(noise, spec(encode_format="jpg", encode_quality=10, resize_mode="no"))
    high = process_image(noise, spec(encode_format="jpg", encode_quality=95, resize_mode="no"))
    assert len(low.data) < len(high.data) / 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 0}, "image_size"),
        ({"resize_mode": "stretch"}, "resize_mode must be one of no, keep_ratio, center_crop, border"),
        ({"encode_format": "gif"}, "encode_format"),
        ({"encode_format": "png", "encode_quality": 95}, "compress_level from 0 to 9"),
        ({"encode_format": "jpg", "encode_quality": 101}, "quality from 0 to 100"),
        ({"min_image_size": -1}, "min_image_size"),
        ({"max_image_pixels": 0}, "max_image_pixels"),
    ],
)
def test_spec_validation(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageSpec(**overrides)
