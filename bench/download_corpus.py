"""The download benchmark's URL mix: deterministic images and failures, cached on disk.

Item ``i`` of ``(count, seed)`` is always the same: a JPEG, PNG or WebP whose size is drawn
log-uniformly from 5 KB to 2 MB (with a realistic 0.15-0.35 bytes per pixel for JPEG, so a
2 MB JPEG is a multi-megapixel photo to decode), a 404, or a response slower than any
timeout the bench uses. Every response also gets 5-50 ms of latency.

Images are a gradient, a few filled shapes and noise: flat pictures compress far better
than photos and would make every decoder look fast.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import multiprocessing
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MIN_BYTES, MAX_BYTES = 5_000, 2_000_000
NOT_FOUND_SHARE, SLOW_SHARE = 0.05, 0.02
FORMAT_SHARES = {"jpg": 0.70, "png": 0.15, "webp": 0.15}
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# Measured bytes per pixel of these pictures at the save settings below, per unit of noise sigma.
_BYTES_PER_PIXEL = {"jpg": (0.08, 0.020), "png": (1.4, 0.11), "webp": (0.04, 0.013)}
_SAVE = {"jpg": ("JPEG", {"quality": 88}), "png": ("PNG", {"compress_level": 1}), "webp": ("WEBP", {"quality": 80})}
_TILE = 256


@dataclasses.dataclass(frozen=True)
class Item:
    """One URL of the mix: what the server answers for ``/img/{index}.{ext}``."""

    index: int
    kind: str  # "image", "404" or "slow"
    ext: str
    latency_s: float
    size: tuple[int, int] = (0, 0)
    noise: float = 0.0  # sigma of the pixel noise: sets how well the image compresses

    @property
    def path(self) -> str:
        return f"/img/{self.index:06d}.{self.ext}"


def plan(count: int, seed: int) -> list[Item]:
    """The mix, without pixels: cheap, and the same in every process."""
    items = []
    for index in range(count):
        rng = random.Random(seed * 1_000_003 + index)
        ext = rng.choices(list(FORMAT_SHARES), list(FORMAT_SHARES.values()))[0]
        latency = rng.uniform(0.005, 0.050)
        roll = rng.random()
        kind = "404" if roll < NOT_FOUND_SHARE else "slow" if roll < NOT_FOUND_SHARE + SLOW_SHARE else "image"
        target = math.exp(rng.uniform(math.log(MIN_BYTES), math.log(MAX_BYTES)))
        noise = rng.uniform(3, 12)
        base, per_sigma = _BYTES_PER_PIXEL[ext]
        pixels = max(48 * 48, target / (base + per_sigma * noise))
        aspect = rng.uniform(0.5, 2.0)
        width = max(48, round(math.sqrt(pixels * aspect)))
        height = max(48, round(pixels / width))
        items.append(Item(index, kind, ext, latency, (width, height), noise))
    return items


def render(item: Item, seed: int) -> bytes:
    """The image bytes of an ``image`` item."""
    rng = random.Random(seed * 7_919 + item.index)
    noise_rng = np.random.default_rng(seed * 7_919 + item.index)
    width, height = item.size
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    start = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    end = np.array([rng.randrange(256) for _ in range(3)], np.float32)
    mix = (xs + ys) / 2
    image = Image.fromarray((start * (1 - mix) + end * mix).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 12)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, x0 + rng.randrange(width // 2 + 1), y0 + rng.randrange(height // 2 + 1))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    sigma = item.noise
    if item.ext == "png":  # deflate would find a repeated tile: PNG gets noise everywhere
        noise = noise_rng.normal(0, sigma, (height, width, 3)).astype(np.int16)
    else:  # JPEG and WebP code blocks independently: a tiled noise costs them the same
        tile = noise_rng.normal(0, sigma, (_TILE, _TILE, 3)).astype(np.int16)
        noise = np.tile(tile, (height // _TILE + 1, width // _TILE + 1, 1))[:height, :width]
    pixels = np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    pillow_format, options = _SAVE[item.ext]
    Image.fromarray(pixels).save(buffer, pillow_format, **options)
    return buffer.getvalue()


def _render_to(args: tuple[Item, int, str]) -> None:
    item, seed, folder = args
    (Path(folder) / Path(item.path).name).write_bytes(render(item, seed))


def build(folder: Path, count: int, seed: int, processes: int = 2) -> list[Item]:
    """Write the mix's images under ``folder`` (once: a finished folder is reused)."""
    items = plan(count, seed)
    done = folder / "manifest.json"
    if done.exists():
        return items
    folder.mkdir(parents=True, exist_ok=True)
    work = [(item, seed, str(folder)) for item in items if item.kind == "image"]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_render_to, work, chunksize=4)
    done.write_text(json.dumps({"count": count, "seed": seed}))
    return items
