"""The sample grid of the report: thumbnails of kept and of rejected images, from a few shards.

Kept images come from the start of the first tar part of up to 8 shards, read as a stream and
never whole (tar parts can be large, and on object stores); rejected ones from the parquet's
``preview`` column, which the scoring stage fills for a fraction of ``below_threshold`` rows.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import math
import posixpath
import tarfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow.compute as pc
import pyarrow.parquet as pq

from clipcrawl.transforms.previews import DEFAULT_PREVIEW_RATE
from clipcrawl.transforms.status import Status

if TYPE_CHECKING:
    from clipcrawl.pipelines.report_data import ShardInfo

_GRID_COLUMNS = ["key", "url", "caption", "similarity", "status", "preview"]
THUMB_SIDE = 160

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class GridImage:
    key: str
    caption: str
    similarity: float | None
    url: str
    status: str
    jpeg: bytes  # a thumbnail, at most THUMB_SIDE pixels a side


def kept_grid(fs: Any, base: str, shards: list[ShardInfo], grid: int, problems: list[str]) -> list[GridImage]:
    """Kept samples from the start of the first tar part of up to 8 shards, spread by similarity."""
    chosen = choose_evenly([info for info in shards if info.kept and info.tar_parts], min(8, grid))
    if not chosen or grid <= 0:
        return []
    per_shard = math.ceil(4 * grid / len(chosen))
    pool: list[GridImage] = []
    for info in chosen:
        try:
            pool += _tar_samples(fs, posixpath.join(base, f"{info.shard_no:06d}_00.tar"), per_shard)
        except (OSError, tarfile.TarError, ValueError) as error:
            problems.append(f"{info.shard_no:06d}_00.tar unreadable: {error}")
    return choose_evenly(sorted(pool, key=lambda image: (image.similarity or 0.0, image.key)), grid)


def _tar_samples(fs: Any, path: str, limit: int) -> list[GridImage]:
    members: dict[str, dict[str, bytes]] = collections.defaultdict(dict)
    found: list[GridImage] = []
    with fs.open(path, "rb") as source, tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            key, _, extension = member.name.partition(".")
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                continue
            members[key][extension] = handle.read()
            sample = members[key]
            image = next((sample[e] for e in ("jpg", "png", "webp") if e in sample), None)
            if image is None or "json" not in sample:
                continue
            meta = json.loads(members.pop(key)["json"])
            jpeg = thumbnail(image)
            if jpeg is not None:
                found.append(
                    GridImage(key, meta.get("caption", ""), meta.get("similarity"), meta.get("url", ""), Status.SUCCESS, jpeg)
                )
            if len(found) >= limit:
                break
    return found


def rejected_grid(fs: Any, base: str, shards: list[ShardInfo], grid: int, problems: list[str]) -> list[GridImage]:
    """below_threshold samples that kept a preview, closest to the threshold first."""
    chosen = choose_evenly([info for info in shards if info.below_threshold and info.has_parquet], min(8, grid))
    pool: list[GridImage] = []
    for info in chosen if grid > 0 else []:
        path = posixpath.join(base, f"{info.shard_no:06d}.parquet")
        with fs.open(path, "rb") as source:
            schema = pq.read_schema(source)
            if "preview" not in schema.names:
                continue  # written before previews existed
            table = pq.read_table(source, columns=_GRID_COLUMNS)
        mask = pc.and_(pc.equal(table["status"], Status.BELOW_THRESHOLD.value), pc.is_valid(table["preview"]))
        rows = table.filter(mask).to_pylist()
        for row in choose_evenly(rows, math.ceil(4 * grid / len(chosen))):
            jpeg = thumbnail(row["preview"])
            if jpeg is not None:
                pool.append(GridImage(row["key"], row["caption"], row["similarity"], row["url"], row["status"], jpeg))
    if chosen and not pool:
        problems.append(
            "no below_threshold row has a preview: a run keeps one for --preview_rate of them "
            f"(1 in {round(1 / DEFAULT_PREVIEW_RATE)} by default, chosen by key; 0 keeps none)"
        )
    return choose_evenly(sorted(pool, key=lambda image: (-(image.similarity or 0.0), image.key)), grid)


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes | None:
    """A small JPEG of ``data`` for the grid, or None when it is no image."""
    from clipcrawl.transforms.previews import make_preview

    return make_preview(data, max_side=side)


def choose_evenly(items: Sequence[T], count: int) -> list[T]:
    """``count`` items spread evenly over ``items`` (first and last included), in order."""
    if count <= 0 or not items:
        return []
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def as_data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
