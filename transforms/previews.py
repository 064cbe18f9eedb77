"""Small JPEG previews of some rejected images, so a report can show what the threshold threw away.

The scoring stage drops the image bytes of ``below_threshold`` rows (they are not in any tar);
for a fixed fraction of them it keeps a thumbnail in the parquet's ``preview`` column. Which
rows get one depends only on the key, so a rerun picks the same rows on any worker.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image

PREVIEW_MAX_SIDE = 128
PREVIEW_QUALITY = 75
# 1 in 64 rejected images: ~150 per 10k rejected rows, plenty for a report's grid, and cheap on
# a GPU worker (each preview is a JPEG decode and encode in the scoring stage).
DEFAULT_PREVIEW_RATE = 1 / 64


def wants_preview(key: str, rate: float) -> bool:
    """Whether the row with ``key`` is in the previewed fraction ``rate`` (0 none, 1 all)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def make_preview(data: bytes | None, max_side: int = PREVIEW_MAX_SIDE) -> bytes | None:
    """A JPEG of at most ``max_side`` pixels per side, or None when ``data`` is no image.

    A preview is a convenience: an image that cannot be shrunk gets none rather than failing
    the sample (it was decodable a moment ago, at scoring).
    """
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, cheaply
            picture = _flatten(image)
            picture.thumbnail((max_side, max_side))
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
            return buffer.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with transparent areas on white (JPEG has no alpha; black would hide dark shapes)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
