"""Streaming reader of existing WebDataset tars, so a dataset can be re-scored without
downloading its images again.

Members are grouped by key the WebDataset way: the key is the member path up to the first
"." of its basename (directory prefix kept), the extension is the rest, lower-cased. Skipped:
anything that is not a regular file (directories, links), members inside a directory whose
name starts with "__" (``__MACOSX/``), basenames that start with "." (``._x.jpg`` AppleDouble
files, ``.DS_Store``), and names with no extension (also WebDataset's ``__key__``-style files).

This uses ``tarfile`` directly rather than ``webdataset.tariterators``: importing
``webdataset`` imports torch (about 2 s on a CPU worker that never scores), its
``group_by_keys`` raises on a repeated extension and quietly starts a second sample when a
key comes back later, and, like ``tarfile`` itself in stream mode, it ends without an error
on an archive cut at a member boundary. Here a key that comes back is reported in
``problem`` and a cut archive raises ``BrokenTarError``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import fsspec

from clipcrawl.io.inputs import InputError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
WEBDATASET_SUFFIXES = (".tar", ".tar.gz", ".tgz")
CAPTION_EXTENSION = "txt"
METADATA_EXTENSION = "json"
_READ_EXTENSIONS = frozenset((*IMAGE_EXTENSIONS, CAPTION_EXTENSION, METADATA_EXTENSION))
_TAR_FAULTS = (tarfile.TarError, EOFError, zlib.error)  # a cut or corrupt (gzipped) tar


class BrokenTarError(InputError):
    """The tar cannot be read to its end (truncated or corrupt): the whole shard fails."""


@dataclasses.dataclass(frozen=True)
class TarSample:
    """The members of one key; ``problem`` says why the sample is incomplete, else None."""

    key: str
    image: bytes | None = dataclasses.field(repr=False)
    image_format: str | None  # "jpg" | "png" | "webp"
    caption: str | None
    metadata: dict[str, Any]
    problem: str | None


def is_webdataset(uri: str) -> bool:
    return uri.lower().endswith(WEBDATASET_SUFFIXES)


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, lower-cased extension) of a member path, or None when it is not a sample part."""
    directory, basename = posixpath.split(name)
    if any(part.startswith("__") for part in directory.split("/")):
        return None
    if basename.startswith(".") or "." not in basename:
        return None
    stem, extension = basename.split(".", 1)
    if not extension:
        return None
    return posixpath.join(directory, stem) if directory else stem, extension.lower()


def iter_tar_samples(uri: str) -> Iterator[TarSample]:
    """Yield the samples of one tar in order, one sample in memory at a time.

    A key met again after other keys (a tar written out of order, or two tars concatenated)
    is yielded as a further sample whose ``problem`` says so; the earlier one was already
    yielded and is not marked. On a truncated or corrupt tar, every sample completed before
    the damage is yielded, the one in progress is not, and ``BrokenTarError`` is raised.
    """
    seen: set[str] = set()
    key: str | None = None
    parts: dict[str, bytes | None] = {}
    with fsspec.open(uri, "rb") as raw:
        for member_key, extension, read in _iter_members(uri, raw):
            if member_key != key or extension in parts:
                if key is not None:  # complete: yield it before this member's data can fail
                    yield _sample(key, parts, repeated=key in seen)
                    seen.add(key)
                key, parts = member_key, {}
            parts[extension] = read() if extension in _READ_EXTENSIONS else None
    if key is not None:
        yield _sample(key, parts, repeated=key in seen)


def _iter_members(uri: str, raw: Any) -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    """(key, extension, read) per sample member; read() only before asking for the next."""
    try:
        with _CheckedTarFile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                split = split_member_name(member.name) if member.isreg() else None
                if split is not None:
                    yield (*split, functools.partial(_read_member, uri, tar, member))
                tar.members = []  # stream mode would keep every TarInfo
            if not isinstance(tar.stopped_by, tarfile.EOFHeaderError):
                raise BrokenTarError(f"{uri}: tar ends without its end-of-archive block (truncated?)")
    except _TAR_FAULTS as exc:
        raise BrokenTarError(f"{uri}: cannot read tar: {exc}") from exc


def _read_member(uri: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    try:
        return tar.extractfile(member).read()
    except _TAR_FAULTS as exc:
        raise BrokenTarError(f"{uri}: cannot read {member.name!r}: {exc}") from exc


class _EndAwareTarInfo(tarfile.TarInfo):
    """Records why reading headers stopped: in stream mode tarfile ends silently at a cut or
    corrupt header past the first, which would pass a partial download off as complete."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            if isinstance(tar, _CheckedTarFile):
                tar.stopped_by = exc
            raise


class _CheckedTarFile(tarfile.TarFile):
    tarinfo = _EndAwareTarInfo
    stopped_by: Exception | None = None


def _sample(key: str, parts: dict[str, bytes | None], repeated: bool) -> TarSample:
    problems: list[str] = []
    if repeated:
        problems.append(f"key {key!r} appears again after other keys (tar out of order or duplicated)")
    images = [extension for extension in parts if extension in IMAGE_EXTENSIONS]
    if not images:
        problems.append(f"no image member (.{', .'.join(IMAGE_EXTENSIONS)})")
    elif len(images) > 1:
        problems.append(f"several image members ({', '.join(images)}); kept .{images[0]}")
    caption_bytes = parts.get(CAPTION_EXTENSION)
    if caption_bytes is None:
        problems.append("no caption member (.txt)")
    metadata, metadata_problem = _metadata(parts.get(METADATA_EXTENSION))
    if metadata_problem:
        problems.append(metadata_problem)
    return TarSample(
        key=key,
        image=parts[images[0]] if images else None,
        image_format=("jpg" if images[0] == "jpeg" else images[0]) if images else None,
        caption=None if caption_bytes is None else caption_bytes.decode("utf-8", errors="replace"),
        metadata=metadata,
        problem="; ".join(problems) or None,
    )


def _metadata(raw: bytes | None) -> tuple[dict[str, Any], str | None]:
    """A missing .json is normal (img2dataset can omit it); an unreadable one is a problem."""
    if raw is None:
        return {}, None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"metadata .json is not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, f"metadata .json is a JSON {type(value).__name__}, not an object"
    return value, None
