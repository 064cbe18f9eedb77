"""Decode, check, resize and re-encode one downloaded image: Pillow, no I/O.

Resize modes follow img2dataset so its users get the sizes they expect. Everything that
can reject an image raises ``ImageError`` carrying the final ``Status``; the download stage
turns it into a rejected row in one place.

Pillow decodes every WebP at full size (it has no reduced-scale WebP decode, unlike JPEG's
draft mode), which made large WebPs the costliest images of a crawl. A WebP at least twice the
target size is therefore decoded by libwebp through pyvips straight at the target scale
(``decode_webp_scaled``): 26.8 instead of 44.7 CPU ms per WebP on the download bench's mix.
Pillow still reads the header first, so every size and pixel-limit check stays the same. Where
libvips cannot be loaded, Pillow decodes every WebP as before.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import io
import logging
from types import ModuleType

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from clipcrawl.transforms.status import Status

# Raster formats web pages serve. Pillow's other plugins (EPS runs Ghostscript, exotic
# scientific formats) are attack surface with no value for a web image dataset.
DECODE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF", "ICO")

# encode_format -> (Pillow format name, save keyword that encode_quality sets, its range)
ENCODINGS: dict[str, tuple[str, str, range]] = {
    "jpg": ("JPEG", "quality", range(0, 101)),
    "webp": ("WEBP", "quality", range(0, 101)),
    "png": ("PNG", "compress_level", range(0, 10)),  # as in img2dataset: a compression level
}
# encode_quality when none is given: img2dataset's 95 for lossy formats, zlib's usual 6 for PNG.
DEFAULT_QUALITY: dict[str, int] = {"jpg": 95, "webp": 95, "png": 6}

# Leading bytes of the DECODE_FORMATS: lets the downloader give up early on a mislabelled page.
_MAGIC_PREFIXES: tuple[bytes, ...] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"\x00\x00\x01\x00",  # ICO
)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIDE_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF transpose/rotate by 90 degrees
_TRANSPOSING_ORIENTATIONS = frozenset(range(2, 9))  # 1 (and junk values) leave the pixels as they are
# EXIF orientation -> the transpose that displays the stored pixels (EXIF 2.3, tag 0x0112).
_EXIF_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Scaled WebP decoding pays off once the source is this many times the target (measured
# crossover ~1.5-2x: below it libvips' per-call overhead eats the saving).
SCALED_WEBP_MIN_RATIO = 2.0


class ResizeMode(enum.StrEnum):
    """img2dataset's resize modes (``keep_ratio_largest`` is not offered)."""

    NO = "no"  # keep the decoded size
    KEEP_RATIO = "keep_ratio"  # smallest side becomes image_size
    CENTER_CROP = "center_crop"  # smallest side to image_size, then a centred square crop
    BORDER = "border"  # largest side to image_size, then black padding to a square


class ImageError(Exception):
    """The image cannot be kept; ``status`` is the final status of its row."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What a stored image must look like; validated so a bad flag fails before the run."""

    image_size: int = 256
    resize_mode: str = ResizeMode.BORDER.value
    resize_only_if_bigger: bool = False
    encode_format: str = "jpg"
    encode_quality: int = 95
    min_image_size: int = 10
    max_image_pixels: int = 89_478_485

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be at least 1, got {self.image_size}")
        if self.resize_mode not in set(ResizeMode):
            choices = ", ".join(m.value for m in ResizeMode)
            raise ValueError(f"resize_mode must be one of {choices}; got {self.resize_mode!r}")
        if self.encode_format not in ENCODINGS:
            raise ValueError(f"encode_format must be one of {', '.join(ENCODINGS)}; got {self.encode_format!r}")
        _, keyword, allowed = ENCODINGS[self.encode_format]
        if self.encode_quality not in allowed:
            raise ValueError(
                f"encode_quality for {self.encode_format} is a {keyword} from {allowed.start} to "
                f"{allowed.stop - 1}; got {self.encode_quality}"
            )
        if self.min_image_size < 0:
            raise ValueError(f"min_image_size must be >= 0, got {self.min_image_size}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be at least 1, got {self.max_image_pixels}")


@dataclasses.dataclass(frozen=True)
class ProcessedImage:
    """The stored bytes and the facts the parquet row records about them."""

    data: bytes = dataclasses.field(repr=False)
    format: str  # the encode_format: jpg, png or webp
    width: int
    height: int
    original_width: int
    original_height: int
    sha256: str  # hex digest of ``data``, the bytes that go into the tar


def process_image(data: bytes, spec: ImageSpec) -> ProcessedImage:
    """Downloaded bytes -> stored image, or ``ImageError`` with the reason it is not kept."""
    image = open_image(data, spec.max_image_pixels)
    raw_size = image.size
    if min(raw_size) < spec.min_image_size:
        raise ImageError(
            Status.TOO_SMALL, f"{raw_size[0]}x{raw_size[1]} is below min_image_size {spec.min_image_size}"
        )
    draft_target = target_size(raw_size, spec)
    if draft_target is not None and image.format in ("JPEG", "MPO"):
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale; draft never goes below the target.
        image.draft(image.mode, draft_target)
    if image.format == "WEBP" and _shrinks_enough(raw_size, draft_target) and webp_decoder():
        loaded, swapped = decode_webp_scaled(data, image, draft_target)
    else:
        loaded, swapped = decode_rgb(image)
    original = raw_size[::-1] if swapped else raw_size  # the row records displayed sizes
    resized = resize(loaded, original, spec)
    stored = encode(resized, spec.encode_format, spec.encode_quality)
    return ProcessedImage(
        data=stored,
        format=spec.encode_format,
        width=resized.width,
        height=resized.height,
        original_width=original[0],
        original_height=original[1],
        sha256=hashlib.sha256(stored).hexdigest(),
    )


def looks_like_image(head: bytes) -> bool:
    """Whether the first bytes of a body start one of the raster formats we decode."""
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp":  # ISO base media: AVIF/HEIF
        return head[8:12] in (b"avif", b"avis", b"mif1", b"msf1")
    return head.startswith(_MAGIC_PREFIXES)


def _is_svg(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith((b"<svg", b"<?xml", b"<!doctype svg")) and b"<svg" in head


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read only the header, and refuse oversized images before any pixel is decoded."""
    if not data:
        raise ImageError(Status.FAILED_TO_DECODE, "empty body (0 bytes)")
    if _is_svg(data):
        raise ImageError(Status.FAILED_TO_DECODE, "SVG is a vector format; only raster images are kept")
    try:
        image = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(Status.TOO_LARGE, str(exc)) from exc
    except UnidentifiedImageError as exc:  # its message names a BytesIO's memory address
        raise ImageError(
            Status.FAILED_TO_DECODE, f"not a supported image format; {len(data)} bytes starting {data[:16]!r}"
        ) from exc
    except Exception as exc:  # Pillow raises many types for hostile bytes
        raise ImageError(Status.FAILED_TO_DECODE, f"{type(exc).__name__}: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            Status.TOO_LARGE, f"{width}x{height} is {width * height} pixels, over max_image_pixels {max_pixels}"
        )
    return image


def decode_rgb(image: Image.Image) -> tuple[Image.Image, bool]:
    """Decode the first frame, apply EXIF orientation, and convert to 8-bit RGB.

    Also says whether the orientation turned the image by 90 degrees (swapping its sides).
    """
    try:
        image.load()
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in _TRANSPOSING_ORIENTATIONS:
            image = ImageOps.exif_transpose(image)  # otherwise it returns a full-size copy: skip it
        return to_rgb(image), orientation in _SIDE_SWAPPING_ORIENTATIONS
    except Exception as exc:  # truncated data surfaces here, as OSError, SyntaxError, ...
        raise ImageError(Status.FAILED_TO_DECODE, f"{type(exc).__name__}: {exc}") from exc


def _shrinks_enough(size: tuple[int, int], target: tuple[int, int] | None) -> bool:
    return target is not None and min(size[0] / target[0], size[1] / target[1]) >= SCALED_WEBP_MIN_RATIO


@functools.cache
def webp_decoder() -> ModuleType | None:
    """pyvips set up for the downloader's threads, or None when it is not installed."""
    try:
        import pyvips
    except (ImportError, OSError):  # not installed, or installed without a libvips to load
        return None
    pyvips.cache_set_max(0)  # every body is new: an operation cache would only hold pixels
    pyvips.concurrency_set(1)  # the download threads are the parallelism; no worker pool per image
    pyvips.block_untrusted_set(True)  # defence in depth: only webpload_buffer is ever called
    # A corrupt body logs one warning per tile before the error that becomes its row's status.
    logging.getLogger("pyvips").setLevel(logging.ERROR)
    return pyvips


def decode_webp_scaled(data: bytes, image: Image.Image, target: tuple[int, int]) -> tuple[Image.Image, bool]:
    """``decode_rgb`` for a WebP, decoded by libwebp at (about) ``target``, in stored orientation.

    ``image`` is Pillow's opened header: the EXIF orientation comes from it, so both decoders
    agree on it. libwebp rescales while it converts YUV to RGB, so the full-size RGBA canvas
    that Pillow builds and copies never exists. ``resize`` fixes a 1-pixel rounding
    difference. Transparency is flattened over white, as ``to_rgb`` does.
    """
    vips = webp_decoder()
    assert vips is not None
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        scale = max(target[0] / image.width, target[1] / image.height)
        small = vips.Image.webpload_buffer(data, scale=scale, fail_on="error")  # first frame only
        if small.hasalpha():
            small = small.flatten(background=[255, 255, 255])
        if small.bands != 3 or small.format != "uchar":
            small = small.colourspace("srgb").cast("uchar")
        pixels = small.write_to_memory()  # the decode runs here
    except vips.Error as exc:  # its message is "unable to call webpload_buffer\n  webp: <reason>"
        reason = " ".join(str(exc).split("\n")[1:]).strip() or str(exc)
        raise ImageError(Status.FAILED_TO_DECODE, f"WebP decode failed: {reason}") from exc
    except Exception as exc:  # EXIF parsing of hostile bytes
        raise ImageError(Status.FAILED_TO_DECODE, f"{type(exc).__name__}: {exc}") from exc
    rgb = Image.frombytes("RGB", (small.width, small.height), pixels)
    if orientation in _EXIF_TRANSPOSE:
        rgb = rgb.transpose(_EXIF_TRANSPOSE[orientation])
    return rgb, orientation in _SIDE_SWAPPING_ORIENTATIONS


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB the way a viewer shows it: transparency over white, 16-bit scaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        return _to_8bit(image).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _to_8bit(image: Image.Image) -> Image.Image:
    """Pillow's own conversion clips 16-bit values at 255, which turns most images white."""
    values = np.asarray(image).astype(np.float64)
    if image.mode in _SIXTEEN_BIT_MODES:
        values = values / 257.0
    elif values.size and values.max() > 255:
        values = values * (255.0 / values.max())
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def target_size(size: tuple[int, int], spec: ImageSpec) -> tuple[int, int] | None:
    """The size before any crop or padding, or None when the image keeps its size.

    Symmetric in width and height, so it serves both the raw and the EXIF-rotated size.
    """
    if spec.resize_mode == ResizeMode.NO:
        return None
    width, height = size
    side = max(size) if spec.resize_mode == ResizeMode.BORDER else min(size)
    if spec.resize_only_if_bigger and side <= spec.image_size:
        return None
    scale = spec.image_size / side
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(image: Image.Image, original: tuple[int, int], spec: ImageSpec) -> Image.Image:
    """Apply the resize mode; sizes come from ``original`` so draft decoding cannot shift them."""
    target = target_size(original, spec)
    if target is None:
        return image
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    side = spec.image_size
    if spec.resize_mode == ResizeMode.CENTER_CROP:
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side))
    if spec.resize_mode == ResizeMode.BORDER:
        square = Image.new("RGB", (side, side), (0, 0, 0))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        return square
    return image


def encode(image: Image.Image, encode_format: str, quality: int) -> bytes:
    """Re-encode; metadata (EXIF, ICC) is not carried over into the stored bytes."""
    pillow_format, keyword, _ = ENCODINGS[encode_format]
    buffer = io.BytesIO()
    image.save(buffer, pillow_format, **{keyword: quality})
    return buffer.getvalue()
