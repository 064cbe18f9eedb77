"""Turn what the user typed (paths, globs, fsspec URLs, a ``wat.paths.gz`` manifest) into shard URIs.

Expansion happens once, on the launcher, before the graph is built: the coordinator then
gives each URI its stable ``shard_no``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator

import fsspec
from fsspec.core import url_to_fs

_GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """An input that names nothing, or a manifest that cannot be used."""


def expand_inputs(patterns: Iterable[str]) -> list[str]:
    """Every file the patterns name, as URIs, de-duplicated, in a stable (sorted) order.

    A plain path must exist; a glob must match at least one file. Local paths come back
    absolute so that the coordinator's URI is the same whatever the working directory.
    """
    uris: set[str] = set()
    for pattern in patterns:
        matched = list(_expand_one(pattern))
        if not matched:
            raise InputError(f"input {pattern!r} matches no file")
        uris.update(matched)
    return sorted(uris)


def _expand_one(pattern: str) -> Iterator[str]:
    fs, path = url_to_fs(pattern)
    if any(char in path for char in _GLOB_CHARS):
        candidates = fs.glob(path)
    elif fs.exists(path):
        candidates = [path]
    else:
        raise InputError(f"input {pattern!r} does not exist")
    for candidate in sorted(candidates):
        if fs.isdir(candidate):
            raise InputError(f"input {candidate!r} is a directory; give a glob such as {candidate}/*.wat.gz")
        yield fs.unstrip_protocol(candidate) if _has_protocol(pattern) else _local(fs, candidate)


def _has_protocol(pattern: str) -> bool:
    return "://" in pattern and not pattern.startswith("file://")


def _local(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path).removeprefix("file://")


def read_manifest(manifest: str, base_url: str, limit: int | None = None) -> list[str]:
    """URIs listed in a Common Crawl ``*.paths(.gz)`` manifest, joined onto ``base_url``.

    Common Crawl manifests hold one relative path per line
    (``crawl-data/CC-MAIN-.../wat/....warc.wat.gz``); ``base_url`` is the bucket or mirror
    root (``https://data.commoncrawl.org/``, ``s3://commoncrawl/`` or a local directory).
    """
    if not base_url:
        raise InputError("a manifest needs --input_base_url (e.g. s3://commoncrawl/)")
    with fsspec.open(manifest, "rb") as raw:
        head = raw.read(2)
    compression = "gzip" if head == b"\x1f\x8b" else None
    uris: list[str] = []
    with fsspec.open(manifest, "rt", compression=compression, encoding="utf-8") as lines:
        for line in lines:
            relative = line.strip()
            if not relative or relative.startswith("#"):
                continue
            uris.append(join_base(base_url, relative))
            if limit is not None and len(uris) >= limit:
                break
    if not uris:
        raise InputError(f"manifest {manifest!r} lists no paths")
    return uris


def join_base(base_url: str, relative: str) -> str:
    """``base_url`` + ``relative`` with exactly one slash between them."""
    if "://" in base_url:
        return base_url.rstrip("/") + "/" + relative.lstrip("/")
    return posixpath.join(base_url, relative.lstrip("/"))
